"""Text side features: strings embedded once by a pretrained encoder, cached on disk by content.

:func:`encode_texts` turns ``n`` strings (titles, plots, descriptions) into a ``float32 (n, D)``
array of unit-norm embeddings. Empty or missing texts get the zero vector (no text, no
signal). The array is cached under ``cache_dir`` in a file named by the SHA-256 of the encoder's
name and the texts themselves, so the same texts with the same encoder are encoded once per
machine, and any change of text or encoder is a new entry.

Encoders (``encoder=``):

* ``"wordllama"`` (default): WordLlama's ``l2_supercat`` token embeddings (256 values, distilled
  from Llama 2), mean-pooled per text. The weights and the tokenizer ship inside the
  ``wordllama`` wheel; they are read from the installed package, never downloaded
  (``pip install "metarec[text]"``).
* ``"sentence-transformers:/path/to/model"``: a sentence-transformers model in a local folder
  (``pip install sentence-transformers`` yourself; metarec does not download models).

Encoding is deterministic: the same texts give the same array, bit for bit, on one machine.

Example:
    >>> vecs = encode_texts(["Toy Story (1995)", "Heat (1995)"])   # doctest: +SKIP
    >>> vecs.shape                                                  # doctest: +SKIP
    (2, 256)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metarec._errors import CheckpointError, ConfigError, DataError

__all__ = [
    "TextEncoder",
    "WordLlamaEncoder",
    "SentenceTransformerEncoder",
    "get_encoder",
    "encode_texts",
    "encode_text_feature",
    "text_fingerprint",
    "matrix_sha256",
    "check_saved_text",
    "default_cache_dir",
    "DEFAULT_ENCODER",
]

DEFAULT_ENCODER = "wordllama"
"""The encoder of ``FeatureSpec(name, "text")`` unless it names another."""


class TextEncoder(Protocol):
    """What :func:`encode_texts` needs of an encoder."""

    name: str
    """Identifies the encoder and its weights (part of the cache key)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """``n`` non-empty strings -> ``float32 (n, D)``."""
        ...


class WordLlamaEncoder:
    """WordLlama ``l2_supercat`` (256 dims) read from the installed ``wordllama`` package.

    Raises:
        ConfigError: ``wordllama`` is not installed (names the extra), or its wheel lacks the
            bundled weights or tokenizer.
    """

    config = "l2_supercat"
    dim = 256

    def __init__(self) -> None:
        try:
            import wordllama  # type: ignore[import-untyped]
            from safetensors import safe_open
            from tokenizers import Tokenizer
            from wordllama.inference import WordLlamaInference  # type: ignore[import-untyped]
        except ImportError as e:
            raise ConfigError(
                f"text features: the default encoder needs the 'wordllama' package ({e}); install the extra with "
                "pip install \"metarec[text]\", or pass encoder='sentence-transformers:/path/to/model'"
            ) from None
        root = Path(wordllama.__file__).parent
        weights = root / "weights" / f"{self.config}_{self.dim}.safetensors"
        tokenizer = root / "tokenizers" / f"{self.config}_tokenizer_config.json"
        for p in (weights, tokenizer):
            if not p.is_file():
                raise ConfigError(
                    f"text features: {str(p)!r} is missing from the installed wordllama package; "
                    "metarec reads the weights shipped in the wheel and never downloads them; "
                    'reinstall with pip install "metarec[text]"'
                )
        with safe_open(str(weights), framework="np", device="cpu") as f:
            table = f.get_tensor("embedding.weight")
        self._model = WordLlamaInference(table, Tokenizer.from_file(str(tokenizer)))
        version = getattr(wordllama, "__version__", None) or getattr(
            getattr(wordllama, "_version", None), "__version__", "?"
        )
        self.name = f"wordllama-{version}-{self.config}-{self.dim}"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self._model.embed(list(texts), norm=True, batch_size=256)
        return np.ascontiguousarray(out, dtype=np.float32)


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder (imported lazily, never downloaded).

    Raises:
        ConfigError: the folder does not exist, or ``sentence_transformers`` is not installed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise ConfigError(
                f"encoder='sentence-transformers:{path}': no model folder at {str(p)!r}; pass the "
                "folder of a sentence-transformers model saved with model.save(path), or use "
                "encoder='wordllama'"
            )
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                "encoder='sentence-transformers:...': the 'sentence_transformers' package is not installed; install it "
                "with pip install sentence-transformers, or use the default encoder='wordllama' "
                '(pip install "metarec[text]")'
            ) from None
        self._model: Any = SentenceTransformer(str(p), device="cpu", local_files_only=True)
        self.name = f"sentence-transformers:{p.resolve()}"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self._model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.ascontiguousarray(out, dtype=np.float32)


_LOADED: dict[str, TextEncoder] = {}


def get_encoder(encoder: str | TextEncoder = DEFAULT_ENCODER) -> TextEncoder:
    """The encoder named ``encoder`` (loaded once per process), or ``encoder`` itself.

    Raises:
        ConfigError: an unknown encoder name, or a missing package (the message names the extra).
    """
    if not isinstance(encoder, str):
        return encoder
    if encoder in _LOADED:
        return _LOADED[encoder]
    if encoder == "wordllama":
        enc: TextEncoder = WordLlamaEncoder()
    elif encoder.startswith("sentence-transformers:"):
        enc = SentenceTransformerEncoder(encoder.partition(":")[2])
    else:
        raise ConfigError(
            f"encoder={encoder!r}: unknown text encoder; pass 'wordllama' (the default) or "
            "'sentence-transformers:/path/to/local/model'"
        )
    _LOADED[encoder] = enc
    return enc


def default_cache_dir() -> Path:
    """``$METAREC_CACHE/text``, else ``~/.cache/metarec/text``."""
    root = os.environ.get("METAREC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "metarec") / "text"


def encode_texts(
    texts: Sequence[Any],
    *,
    encoder: str | TextEncoder = DEFAULT_ENCODER,
    cache_dir: str | os.PathLike[str] | None | bool = None,
) -> np.ndarray:
    """Embed ``texts``: ``n`` strings -> ``float32 (n, D)`` (see the module docstring).

    Args:
        texts: strings; ``None``, NaN and blank strings get the zero vector.
        encoder: an encoder name (:func:`get_encoder`) or an object with ``name`` and ``encode``.
        cache_dir: folder of the on-disk cache (default :func:`default_cache_dir`); ``False``
            disables the cache.

    Raises:
        DataError: a non-string value (convert the column with ``.astype(str)``).
        ConfigError: an unknown encoder, or a missing package (the message names the extra).
    """
    return encode_text_feature(texts, encoder=encoder, cache_dir=cache_dir)[0]


def encode_text_feature(
    texts: Sequence[Any],
    *,
    encoder: str | TextEncoder = DEFAULT_ENCODER,
    cache_dir: str | os.PathLike[str] | None | bool = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """:func:`encode_texts` and where its array came from.

    Returns:
        ``(vectors, source)``: the ``float32 (n, D)`` array and ``{"encoder": NAME,
        "texts_sha256": HEX}``: the encoder's identity and the fingerprint of the texts
        (:func:`text_fingerprint`). A feature table adds the ``"sha256"`` of its array
        (:func:`matrix_sha256`); a run saves the array with its source, so loading it needs no
        encoder (:func:`check_saved_text`).
    """
    clean = [_text(t, k) for k, t in enumerate(texts)]
    enc = get_encoder(encoder)
    key = text_fingerprint(clean, enc.name)
    path: Path | None = None
    if cache_dir is not False:
        folder = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
        path = folder / f"{key}.npy"
        if path.is_file():
            cached = np.load(path)
            return cached, {"encoder": enc.name, "texts_sha256": key}
    keep = [k for k, t in enumerate(clean) if t]
    vecs = enc.encode([clean[k] for k in keep]) if keep else None
    dim = int(vecs.shape[1]) if vecs is not None else int(getattr(enc, "dim", 1))
    out = np.zeros((len(clean), dim), dtype=np.float32)
    if vecs is not None:
        out[keep] = vecs
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    return out, {"encoder": enc.name, "texts_sha256": key}


def text_fingerprint(texts: Sequence[str], encoder_name: str) -> str:
    """SHA-256 of an encoder's name and the (whitespace-normalised) texts, in order: the cache
    key of :func:`encode_texts` and the identity of a text feature's content."""
    h = hashlib.sha256(encoder_name.encode())  # the encoder's name carries its version and weights
    for t in texts:
        h.update(b"\x00" + t.encode("utf-8"))
    return h.hexdigest()


def matrix_sha256(a: np.ndarray) -> str:
    """SHA-256 of an embedding array's dtype, shape and values."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def check_saved_text(
    arrays: dict[str, np.ndarray], sources: dict[str, dict[str, str]], where: str
) -> dict[str, np.ndarray]:
    """Text arrays read back from a run (``where``: the file), checked against the sources
    recorded when the run was trained (``sources[name]["sha256"]``, see
    :func:`encode_text_feature`).

    Raises:
        CheckpointError: a feature missing from the file, or an array whose fingerprint differs
            from the recorded one (the file was replaced by another run's or edited).
    """
    out = {}
    for name, src in sources.items():
        a = arrays.get(name)
        if a is None:
            raise CheckpointError(
                f"{where}: text feature {name!r} is missing (the file holds {sorted(arrays)}); the "
                "run directory is damaged; restore the file from a copy, or re-create the run with "
                "'metarec train'"
            )
        got, want = matrix_sha256(a), src.get("sha256")
        if got != want:
            raise CheckpointError(
                f"{where}: text feature {name!r} has fingerprint {got[:12]}..., but the run was "
                f"trained with {str(want)[:12]}... (encoder {src.get('encoder')!r}, recorded in "
                "encoders.json); the file was replaced or edited, so items would be scored through "
                "other texts; restore the run's own file from a copy, or re-train on the new texts"
            )
        out[name] = a
    return out


def _text(v: Any, k: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if not isinstance(v, str):
        raise DataError(
            f"texts[{k}]={v!r}: text features hold strings, got {type(v).__name__}; convert the "
            "column first (frame[col].astype(str)) or declare it a categorical feature"
        )
    return " ".join(v.split())
