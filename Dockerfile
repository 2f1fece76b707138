# metarec serve in a container: CPU torch, the serve extra, a non-root user.
#
#   docker build -t metarec-serve .
#   docker run -p 8000:8000 -v $PWD/runs/cold:/run-dir:ro \
#       -v $PWD/token:/run/secrets/token:ro metarec-serve --token-file /run/secrets/token
#
# The run directory (written by `metarec train`) is mounted read-only at /run-dir; arguments after
# the image name are passed to `metarec serve` (limits, --workers, --token-file; README,
# "Deployment"). Liveness: GET /health; readiness: GET /ready (the HEALTHCHECK below).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1

WORKDIR /app
# the CPU build of torch first: the default index would bring a multi-GB CUDA build
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2,<2.14"
COPY pyproject.toml README.md ./
COPY metarec ./metarec
RUN pip install ".[serve]" uvloop \
    && useradd --create-home --uid 10001 metarec

USER metarec
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status != 200)"]
ENTRYPOINT ["metarec", "serve", "--run", "/run-dir", "--host", "0.0.0.0", "--port", "8000"]
