# CPU image by default; `--target gpu` builds on the TensorFlow GPU base for production workers.
FROM python:3.11-slim AS cpu
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY training ./training
COPY service ./service
RUN pip install --no-cache-dir .
ENV MEDROBUST_STORE=/data/models MEDROBUST_DATA_DIR=/data/datasets
VOLUME ["/data"]
ENTRYPOINT ["medrobust"]
CMD ["--help"]

FROM tensorflow/tensorflow:2.16.1-gpu AS gpu
WORKDIR /app
COPY pyproject.toml README.md ./
COPY training ./training
COPY service ./service
RUN pip install --no-cache-dir '.[gpu]'
ENV MEDROBUST_STORE=/data/models MEDROBUST_DATA_DIR=/data/datasets
VOLUME ["/data"]
ENTRYPOINT ["medrobust"]
CMD ["--help"]
