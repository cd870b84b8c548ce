# syntax=docker/dockerfile:1
# Two targets, one layout:
#   docker build --target cpu -t medrobust:cpu .   python slim + tensorflow-cpu (API, CPU workers)
#   docker build --target gpu -t medrobust:gpu .   TensorFlow's CUDA image (GPU workers)
# Default command: `python -m service` (API + one worker); docker-compose.yml runs them apart.
# Everything mutable lives under /data: models/ (model store), state/ (job database, reports,
# checkpoints, embedded broker), datasets/ (mount your data read-only).

FROM python:3.11-slim AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY training ./training
COPY service ./service
RUN pip install . && pip install psycopg2-binary
# not root: the Celery worker runs job code from the broker (and warns when it is root; README
# "Running as root")
RUN useradd --create-home --uid 10001 medrobust && mkdir -p /data && chown medrobust /data
USER medrobust
ENV MEDROBUST_STORE_DIR=/data/models \
    MEDROBUST_STATE_DIR=/data/state MEDROBUST_DATA_DIR=/data/datasets \
    MEDROBUST_HOST=0.0.0.0 MEDROBUST_PORT=8000 TF_CPP_MIN_LOG_LEVEL=2
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "service"]

FROM tensorflow/tensorflow:2.16.1-gpu AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY training ./training
COPY service ./service
# keep the base image's CUDA build of TensorFlow: install every other dependency, then the
# package itself without dependencies (its tensorflow-cpu requirement would replace it)
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('tensorflow')))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt psycopg2-binary \
    && pip install --no-deps . \
    && python -c "import tensorflow, keras, service.config"
# not root: the Celery worker runs job code from the broker (and warns when it is root; README
# "Running as root")
RUN useradd --create-home --uid 10001 medrobust && mkdir -p /data && chown medrobust /data
USER medrobust
ENV MEDROBUST_STORE_DIR=/data/models \
    MEDROBUST_STATE_DIR=/data/state MEDROBUST_DATA_DIR=/data/datasets \
    MEDROBUST_HOST=0.0.0.0 MEDROBUST_PORT=8000 TF_CPP_MIN_LOG_LEVEL=2
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "service"]
