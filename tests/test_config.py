"""Tests of metarec.config: typed scenario loading, overrides, ${VAR} expansion, validation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from metarec._errors import ConfigError, DataError
from metarec.config import (
    AlgorithmSection,
    DataConfig,
    ProtocolConfig,
    Scenario,
    config_hash,
    expand_vars,
    from_dict,
    load_scenario,
    merge,
    parse_overrides,
    save_config,
    scenario_from_dict,
    to_dict,
)

pytestmark = pytest.mark.filterwarnings("error")

SCENARIO = """
name = "movielens-cold"
description = "user cold start on MovieLens-100k"

[data]
source = "movielens-100k"
path = "${METAREC_DATA}/ml-100k"

[data.columns]
user = "uid"

[protocol]
n_support = 5
n_query = 10
fractions = [0.8, 0.1, 0.1]

[model]
hidden = [32, 16]

[algorithm]
name = "maml"
inner_steps = 3
inner_lr = 1

[bench]
shots = [1, 5]
"""


def _write(tmp_path: Path, text: str = SCENARIO, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- loading and round trips -----------------------------------------------------------------


def test_load_scenario_reads_types_and_keeps_defaults(tmp_path):
    s = load_scenario(_write(tmp_path), data_root="/data")
    assert s.name == "movielens-cold"
    assert s.data.source == "movielens-100k"
    assert s.data.path == "/data/ml-100k"
    assert s.data.columns == {"user": "uid"}
    assert s.protocol.fractions == (0.8, 0.1, 0.1)
    assert s.model.hidden == (32, 16)
    assert s.algorithm.inner_lr == 1.0 and isinstance(s.algorithm.inner_lr, float)
    assert s.bench.shots == (1, 5)
    assert s.train == Scenario(name="x").train  # untouched section keeps its defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.algorithm.inner_steps = 1  # type: ignore[misc]


def test_name_defaults_to_file_stem(tmp_path):
    s = load_scenario(_write(tmp_path, "[algorithm]\ninner_steps = 2\n", name="quick.toml"))
    assert s.name == "quick"


def test_round_trip_through_dict_and_json(tmp_path):
    s = load_scenario(_write(tmp_path), data_root="/data")
    assert from_dict(Scenario, to_dict(s)) == s
    assert scenario_from_dict(json.loads(json.dumps(to_dict(s)))) == s
    saved = save_config(s, tmp_path / "run" / "config.json")
    assert saved.is_file()
    assert load_scenario(saved) == s
    assert to_dict(s)["protocol"]["fractions"] == [0.8, 0.1, 0.1]
    assert to_dict(s)["model"]["adapt"] is None


def test_default_scenario_is_valid():
    s = Scenario(name="default")
    assert scenario_from_dict({"name": "default"}) == s
    assert from_dict(Scenario, to_dict(s)) == s


# --- overrides --------------------------------------------------------------------------------


def test_parse_overrides_value_types():
    got = parse_overrides(
        [
            "algorithm.inner_steps=5",
            "algorithm.inner_lr=0.01",
            "algorithm.first_order=true",
            'model.name="melu"',
            "train.device=cuda:0",
            "bench.shots=[1,2]",
            "bench.algorithms=[maml, reptile]",
            "data.path=/tmp/ml 100k",
            "protocol.n_query=none",
        ]
    )
    assert got == {
        "algorithm": {"inner_steps": 5, "inner_lr": 0.01, "first_order": True},
        "model": {"name": "melu"},
        "train": {"device": "cuda:0"},
        "bench": {"shots": [1, 2], "algorithms": ["maml", "reptile"]},
        "data": {"path": "/tmp/ml 100k"},
        "protocol": {"n_query": "none"},
    }


def test_overrides_apply_over_the_file(tmp_path):
    s = load_scenario(
        _write(tmp_path),
        overrides=[
            "algorithm.inner_steps=7",
            "algorithm.inner_lr=1",
            "train.bf16=true",
            "model.name=mamo",
            "bench.shots=[2,4]",
            "protocol.n_query=none",
            "data.columns.item=iid",
        ],
        data_root="/data",
    )
    assert s.algorithm.inner_steps == 7
    assert s.algorithm.inner_lr == 1.0
    assert s.train.bf16 is True
    assert s.model.name == "mamo"
    assert s.bench.shots == (2, 4)
    assert s.protocol.n_query is None
    assert s.data.columns == {"user": "uid", "item": "iid"}
    assert s.protocol.n_support == 5  # from the file, not overridden


def test_later_override_wins():
    assert parse_overrides(["train.steps=1", "train.steps=2"]) == {"train": {"steps": 2}}


@pytest.mark.parametrize("item", ["algorithm.inner_steps", "=5", "algorithm..inner_steps=5"])
def test_malformed_override_shows_the_right_form(item):
    with pytest.raises(ConfigError, match=r"--set algorithm\.inner_steps=5"):
        parse_overrides([item])


def test_override_conflicting_with_an_earlier_scalar():
    with pytest.raises(ConfigError, match="already set"):
        parse_overrides(["train=1", "train.steps=2"])


def test_merge_is_deep_and_does_not_modify_inputs():
    base = {"a": {"x": 1, "y": 2}, "b": 1}
    over = {"a": {"y": 3}, "c": [1]}
    assert merge(base, over) == {"a": {"x": 1, "y": 3}, "b": 1, "c": [1]}
    assert base == {"a": {"x": 1, "y": 2}, "b": 1}
    assert over == {"a": {"y": 3}, "c": [1]}


# --- unknown keys and types -------------------------------------------------------------------


def test_unknown_top_level_key_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'algoritm' \(did you mean 'algorithm'\?\)"):
        scenario_from_dict({"name": "x", "algoritm": {}})


def test_unknown_nested_key_suggests_and_lists_valid_keys():
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'algorithm\.inner_stpes' \(did you mean 'inner_steps'\?\); "
        r"valid keys: name, inner_steps, inner_lr",
    ):
        scenario_from_dict({"name": "x", "algorithm": {"inner_stpes": 3}})


def test_unknown_key_from_override_names_the_file(tmp_path):
    path = _write(tmp_path)
    with pytest.raises(ConfigError, match=r"scenario\.toml: unknown key 'train\.stpes'"):
        load_scenario(path, overrides=["train.stpes=3"], data_root="/d")


def test_unknown_key_deeply_nested():
    with pytest.raises(
        ConfigError, match=r"'data\.synthetic\.n_domain' \(did you mean 'n_domains'"
    ):
        scenario_from_dict({"name": "x", "data": {"synthetic": {"n_domain": 3}}})


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("algorithm", "inner_steps", "five", "expected an integer"),
        ("algorithm", "inner_steps", 5.0, "expected an integer"),
        ("algorithm", "inner_steps", True, "expected an integer"),
        ("algorithm", "inner_lr", "fast", "expected a number"),
        ("train", "bf16", "yes", "expected true or false"),
        ("train", "bf16", 1, "expected true or false"),
        ("model", "name", 3, "expected a string"),
        ("train", "grad_clip", "big", "expected a number or none"),
        ("bench", "shots", 5, "expected a list of integers"),
        ("bench", "shots", [1, "3"], "expected a list of integers"),
        ("data", "columns", ["user"], "expected a table of strings"),
    ],
)
def test_wrong_type_names_key_value_type_and_fix(section, key, value, expected):
    with pytest.raises(ConfigError) as info:
        scenario_from_dict({"name": "x", section: {key: value}})
    message = str(info.value)
    assert message.startswith(f"{section}.{key}={value!r}: {expected}")
    assert f"--set {section}.{key}" in message


def test_wrong_type_fix_shows_a_valid_value():
    with pytest.raises(
        ConfigError, match=r"e\.g\. --set algorithm\.inner_steps=5, or inner_steps = 5"
    ):
        scenario_from_dict({"name": "x", "algorithm": {"inner_steps": "five"}})


def test_section_that_is_not_a_table():
    with pytest.raises(
        ConfigError, match=r"protocol='random': expected a table; write it as \[protocol\]"
    ):
        scenario_from_dict({"name": "x", "protocol": "random"})


def test_missing_required_key():
    from metarec.config import FeatureFile

    with pytest.raises(ConfigError, match=r"missing key 'data.user_features\[0\].id'"):
        from_dict(
            FeatureFile, {"path": "u.csv", "columns": {"a": "numeric"}}, "data.user_features[0]"
        )
    assert scenario_from_dict({}).name == "scenario"  # a scenario built in Python needs no name


def test_bad_literal_suggests_the_close_choice():
    with pytest.raises(
        ConfigError,
        match=r"data\.source='movielens100k': expected one of 'synthetic', .*"
        r"\(did you mean 'movielens-100k'\?\); e\.g\. --set data\.source=movielens-100k",
    ):
        scenario_from_dict({"name": "x", "data": {"source": "movielens100k"}})


def test_bad_literal_nested():
    with pytest.raises(ConfigError, match=r"data\.synthetic\.feedback='implict'.*'implicit'"):
        scenario_from_dict({"name": "x", "data": {"synthetic": {"feedback": "implict"}}})


def test_none_words_only_for_optional_fields():
    s = scenario_from_dict({"name": "x", "train": {"grad_clip": "none", "patience": "null"}})
    assert s.train.grad_clip is None and s.train.patience is None
    with pytest.raises(ConfigError, match="expected an integer;"):
        scenario_from_dict({"name": "x", "train": {"steps": "none"}})


def test_unknown_csv_column_role_suggests():
    with pytest.raises(ConfigError, match=r"data\.columns=.*'usr' \(did you mean 'user'\?\)"):
        scenario_from_dict({"name": "x", "data": {"columns": {"usr": "uid"}}})


def test_rating_scale_must_be_low_high():
    with pytest.raises(
        ConfigError, match=r"data\.rating_scale=\[5\.0, 1\.0\]: expected \[low, high\]"
    ):
        scenario_from_dict({"name": "x", "data": {"rating_scale": [5, 1]}})
    s = scenario_from_dict({"name": "x", "data": {"feedback": "implicit", "rating_scale": "none"}})
    assert s.data.rating_scale is None
    assert DataConfig().rating_scale == (1.0, 5.0)


def test_from_dict_on_a_single_section():
    assert from_dict(AlgorithmSection, {"inner_steps": 2}).inner_steps == 2
    with pytest.raises(
        ConfigError, match=r"^unknown key 'inner_step' \(did you mean 'inner_steps'\?\)"
    ):
        from_dict(AlgorithmSection, {"inner_step": 2})


# --- ${METAREC_DATA} --------------------------------------------------------------------------


def test_expand_vars_replaces_in_nested_strings_and_lists():
    data = {"data": {"path": "${METAREC_DATA}/ml-1m", "n": 3}, "xs": ["${A}-${A}", 1]}
    got = expand_vars(data, {"METAREC_DATA": "/d", "A": "a"})
    assert got == {"data": {"path": "/d/ml-1m", "n": 3}, "xs": ["a-a", 1]}
    assert data["data"]["path"] == "${METAREC_DATA}/ml-1m"  # input untouched


def test_expand_vars_missing_variable_names_key_and_fix():
    with pytest.raises(
        ConfigError,
        match=r"data\.path='\$\{METAREC_DATA\}/ml-100k': \$\{METAREC_DATA\} is not defined; "
        r"set METAREC_DATA .* or pass --data-root",
    ):
        expand_vars({"data": {"path": "${METAREC_DATA}/ml-100k"}}, {})


def test_expand_vars_other_missing_variable():
    with pytest.raises(ConfigError, match=r"xs\[0\]=.*\$\{HOME_X\} is not defined; set the HOME_X"):
        expand_vars({"xs": ["${HOME_X}/a"]}, {"HOME_X": ""})


def test_load_uses_env_var_and_data_root_wins(tmp_path, monkeypatch):
    path = _write(tmp_path)
    monkeypatch.setenv("METAREC_DATA", "/from-env")
    assert load_scenario(path).data.path == "/from-env/ml-100k"
    assert load_scenario(path, data_root=tmp_path).data.path == f"{tmp_path}/ml-100k"


def test_load_missing_variable_error(tmp_path, monkeypatch):
    monkeypatch.delenv("METAREC_DATA", raising=False)
    with pytest.raises(ConfigError, match=r"scenario\.toml: data\.path=.*pass --data-root DIR"):
        load_scenario(_write(tmp_path))


def test_load_without_the_variable_needs_no_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("METAREC_DATA", raising=False)
    s = load_scenario(_write(tmp_path, 'name = "syn"\n[data]\nsource = "synthetic"\n'))
    assert s.data.path is None


# --- ProtocolConfig validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fractions": (0.5, 0.5)}, r"fractions=\[0\.5, 0\.5\]: expected 3 entries"),
        ({"fractions": (1.2, -0.1, -0.1)}, r"fractions=.*: each fraction must lie in \[0, 1\]"),
        (
            {"fractions": (0.5, 0.3, 0.3)},
            r"fractions=.*: the fractions must sum to 1 \(they sum to 1\.1\)",
        ),
        ({"n_support": 0}, r"n_support=0: each task needs at least one support .* n_support >= 1"),
        ({"n_query": 0}, r"n_query=0: each task needs at least one query .* n_query >= 1"),
        (
            {"min_interactions": 13},
            r"min_interactions=13: .* n_support \+ n_query = 20 .* min_interactions >= 20",
        ),
        (
            {"n_query": None, "n_support": 13, "min_interactions": 13},
            r"min_interactions=13: .* n_support \+ 1 = 14",
        ),
        ({"max_interactions": 15}, r"max_interactions=15: must be >= min_interactions=20"),
        ({"negatives": -1}, r"negatives=-1: must be >= 0"),
        ({"existing_user_fraction": 1.5}, r"existing_user_fraction=1\.5: must lie in \[0, 1\]"),
        ({"beta": 0.0}, r"beta=0\.0: .* strictly between 0 and 1"),
        ({"beta": 1.0}, r"beta=1\.0: .* strictly between 0 and 1"),
        ({"unit": "cohort"}, r"unit='cohort' needs cohort_by"),
    ],
)
def test_protocol_validation(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ProtocolConfig(**kwargs)


def test_protocol_validation_through_a_file_names_the_section(tmp_path):
    path = _write(tmp_path, "[protocol]\nn_support = 0\n")
    with pytest.raises(
        ConfigError, match=r"scenario\.toml: protocol\.n_support=0: each task needs"
    ):
        load_scenario(path)


def test_protocol_valid_edge_cases():
    assert ProtocolConfig(unit="cohort", cohort_by="age").cohort_by == "age"
    assert ProtocolConfig(n_support=1, n_query=None, min_interactions=2).n_query is None
    assert ProtocolConfig(fractions=(1.0, 0.0, 0.0)).fractions == (1.0, 0.0, 0.0)
    assert ProtocolConfig(fractions=(0.7, 0.2, 0.1)).fractions == (0.7, 0.2, 0.1)


@pytest.mark.parametrize(
    ("section", "values", "pattern"),
    [
        (
            "algorithm",
            {"meta_batch": 0},
            r"algorithm\.meta_batch=0: each outer step needs at least one task",
        ),
        ("train", {"outer_lr": 0}, r"train\.outer_lr=0\.0: must be > 0"),
        ("model", {"dropout": 1.0}, r"model\.dropout=1\.0: must lie in \[0, 1\)"),
        ("bench", {"shots": [0, 1]}, r"bench\.shots=\[0, 1\]: each support size must be >= 1"),
        ("metrics", {"k": 0}, r"metrics\.k=0: must be >= 1"),
    ],
)
def test_other_sections_validate(section, values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        scenario_from_dict({"name": "x", section: values})


def test_synthetic_validation():
    with pytest.raises(ConfigError, match=r"data\.synthetic\.density=0\.0: .* \(0, 1\]"):
        scenario_from_dict({"name": "x", "data": {"synthetic": {"density": 0}}})
    with pytest.raises(ConfigError, match=r"data\.synthetic\.n_users=0: must be >= 1"):
        scenario_from_dict({"name": "x", "data": {"synthetic": {"n_users": 0}}})


# --- config_hash --------------------------------------------------------------------------------


def test_config_hash_is_stable_and_sensitive():
    a = scenario_from_dict({"name": "x", "algorithm": {"inner_lr": 1}})
    b = scenario_from_dict({"algorithm": {"inner_lr": 1.0}, "name": "x"})
    h = config_hash(a)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert h == config_hash(b)  # int coerced to float; key order irrelevant
    assert h == config_hash(from_dict(Scenario, to_dict(a)))
    assert h == config_hash(to_dict(a))
    assert config_hash(dataclasses.replace(a, algorithm=AlgorithmSection(inner_lr=0.5))) != h
    assert config_hash(scenario_from_dict({"name": "x", "train": {"seed": 1}})) != config_hash(
        scenario_from_dict({"name": "x"})
    )


def test_config_hash_known_value():
    # Guards the canonical form: changing it silently would orphan saved results.
    expected = hashlib.sha256(b'{"a":null,"b":[1,2.5]}').hexdigest()[:12]
    assert config_hash({"b": [1, 2.5], "a": None}) == expected


# --- files --------------------------------------------------------------------------------------


def test_missing_file_lists_scenarios_beside_it(tmp_path):
    _write(tmp_path, name="movielens.toml")
    _write(tmp_path, name="amazon.toml")
    with pytest.raises(
        ConfigError,
        match=r"'.*movielen\.toml' does not exist \(did you mean 'movielens\.toml'\?\); "
        r"scenarios in .*: amazon\.toml, movielens\.toml",
    ):
        load_scenario(tmp_path / "movielen.toml")


def test_missing_file_in_empty_or_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="holds no .toml files"):
        load_scenario(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match="does not exist either"):
        load_scenario(tmp_path / "nowhere" / "x.toml")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a scenario file"):
        load_scenario(tmp_path)


def test_toml_syntax_error_names_file(tmp_path):
    path = _write(tmp_path, "[algorithm\ninner_steps = 5\n", name="broken.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML: .*line 1"):
        load_scenario(path)


def test_algorithm_section_is_the_engines_config():
    """Every engine option is reachable from the scenario, and the section produces AlgorithmConfig."""
    from metarec.algorithms import AlgorithmConfig

    s = scenario_from_dict(
        {
            "name": "x",
            "data": {"synthetic": {"feedback": "implicit"}},
            "algorithm": {"sort_tasks": True, "encode_once": False, "chunk_size": 4, "loss": "bpr"},
        }
    )
    cfg = s.algorithm.engine_config("implicit", ("head.*",))
    assert isinstance(cfg, AlgorithmConfig)
    assert (cfg.sort_tasks, cfg.encode_once, cfg.chunk_size, cfg.loss, cfg.adapt) == (
        True,
        False,
        4,
        "bpr",
        ("head.*",),
    )
    assert scenario_from_dict({"name": "x"}).algorithm.engine_config("implicit").loss == "bce"
    run_set = {"adapt", "loss", "relevance", "negatives", "proposal"}  # set by the training run
    engine = {f.name for f in dataclasses.fields(AlgorithmConfig)} - run_set
    assert engine <= {f.name for f in dataclasses.fields(AlgorithmSection)}


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_a_click_loss_on_ratings_is_refused(loss):
    """algorithm.loss=bce on explicit 1..5 ratings trained with exit 0; now it is refused."""
    with pytest.raises(
        ConfigError,
        match=rf"algorithm.loss='{loss}'.*explicit ratings.*rating_scale=\[1.0, 5.0\].*loss=mse",
    ):
        scenario_from_dict(
            {"name": "x", "data": {"source": "csv", "path": "a.csv"}, "algorithm": {"loss": loss}}
        )
    with pytest.raises(ConfigError, match=r"data.synthetic.feedback=implicit"):
        scenario_from_dict({"name": "x", "algorithm": {"loss": loss}})
    ok = {"source": "csv", "path": "a.csv", "rating_scale": [0.0, 1.0]}  # probabilities: fine
    assert (
        scenario_from_dict({"name": "x", "data": ok, "algorithm": {"loss": loss}}).algorithm.loss
        == loss
    )
    imp = {"source": "csv", "path": "a.csv", "feedback": "implicit"}
    assert (
        scenario_from_dict({"name": "x", "data": imp, "algorithm": {"loss": loss}}).algorithm.loss
        == loss
    )


def test_relative_data_paths_resolve_against_the_scenario_file(tmp_path, monkeypatch):
    """data.path in a scenario file is relative to the file's folder (not the current folder);
    a --set path is relative to the current folder; the not-found error shows the resolved path."""
    from metarec.data.load import load_table

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "s.toml").write_text('[data]\nsource = "csv"\npath = "d.csv"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sc = load_scenario(tmp_path / "tasks" / "s.toml")
    assert sc.data.path == str(tmp_path / "tasks" / "d.csv")
    with pytest.raises(
        DataError, match=r"file not found: .*tasks/d\.csv.*relative to the scenario file's folder"
    ):
        load_table(sc.data)
    sc2 = load_scenario(tmp_path / "tasks" / "s.toml", ["data.path=mine.csv"])
    assert sc2.data.path == str(elsewhere / "mine.csv")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "algorithm.inner_steps=0",
            r"algorithm\.inner_steps=0: the inner loop needs at least one step; .*--set algorithm\.inner_steps=5",
        ),
        ("algorithm.meta_batch=0", r"algorithm\.meta_batch=0: .*--set algorithm\.meta_batch=32"),
        (
            "algorithm.inner_lr=-1",
            r"algorithm\.inner_lr=-1\.0: must be a finite number > 0; .*--set algorithm\.inner_lr=0\.01",
        ),
        (
            "algorithm.eval_lr=0",
            r"algorithm\.eval_lr=0\.0: must be > 0; e\.g\. --set algorithm\.eval_lr=0\.01",
        ),
    ],
)
def test_engine_values_are_checked_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_scenario(
            Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml",
            [override],
        )


def test_non_engine_methods_skip_engine_rules():
    s = scenario_from_dict({"name": "x", "algorithm": {"name": "emcdr", "inner_steps": 0}})
    assert s.algorithm.name == "emcdr"
