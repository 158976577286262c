#!/bin/sh
# Build the serving image's root file system from Debian packages, without Docker.
#
#   sudo deploy/container/build-rootfs.sh tonle.bento OUT [ARCH]
#
# The steps of the Dockerfile BentoML writes from deploy/bento/Dockerfile.template, done
# with mmdebstrap (Debian bookworm, minbase) and a chroot: Python 3.11 from Debian, a
# virtualenv at /app/.venv with the Bento's packages installed by
# `pip install --require-hashes --only-binary=:all:` (every file checked against the
# hashes in requirements/serving.txt; nothing compiled), the Bento at
# /home/bentoml/bento, all of it owned by root and read-only for the service user
# bentoml (uid 1034), pip removed afterwards.
#
# Writes OUT/rootfs/ (the tree), OUT/tonle-rootfs.tar.gz (the same as one layer) and
# OUT/image.changes (the image's user, environment and entrypoint as Dockerfile lines).
# deploy/container/smoke.sh imports it into podman and runs it; docs/operations.md
# ("An image without Docker") has the commands.
# Needs root, mmdebstrap and network access to the Debian mirror and the package
# index; ARCH (default: the host's) is a Debian architecture, amd64 or arm64 (another
# than the host's needs qemu-user-static for the chroot; only amd64 was tried).
# Takes a few minutes: not part of CI.
set -eu

if [ "$#" -lt 2 ]; then
    sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
BENTO=$(realpath "$1")
OUT=$(realpath -m "$2")
ARCH=${3:-$(dpkg --print-architecture)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BENTO_PATH=/home/bentoml/bento
ROOTFS="$OUT/rootfs"

[ "$(id -u)" = 0 ] || { echo "build-rootfs.sh: run as root (chroot, file owners)" >&2; exit 2; }
[ -f "$BENTO" ] || { echo "build-rootfs.sh: no Bento archive at $1" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "build-rootfs.sh: apt-get install mmdebstrap" >&2; exit 2; }
[ ! -e "$ROOTFS" ] || { echo "build-rootfs.sh: $ROOTFS exists; remove it first" >&2; exit 2; }
mkdir -p "$OUT"

# In the chroot: a clean environment (none of the host's pip settings), but the host's
# proxy, and for pip its index (PIP_INDEX_URL: a hospital's mirror) and the CA bundle
# of a TLS-inspecting proxy (PIP_CERT), which stays out of the image.
IN_ROOT="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8"
for var in HTTPS_PROXY https_proxy HTTP_PROXY http_proxy NO_PROXY no_proxy PIP_INDEX_URL; do
    eval "value=\${$var:-}"
    [ -z "$value" ] || IN_ROOT="$IN_ROOT $var=$value"
done
PIP_CA=/tmp/pip-ca.pem
COPY_CA="true"
if [ -n "${PIP_CERT:-}" ]; then
    COPY_CA="cp '$(realpath "$PIP_CERT")' \"\$1$PIP_CA\""
    IN_ROOT="$IN_ROOT PIP_CERT=$PIP_CA"
fi

mmdebstrap --mode=root --variant=minbase --architectures="$ARCH" \
    --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="chroot \"\$1\" groupadd -g 1034 bentoml" \
    --customize-hook="chroot \"\$1\" useradd -m -u 1034 -g 1034 -s /usr/sbin/nologin bentoml" \
    --customize-hook="mkdir -p \"\$1$BENTO_PATH\" && tar -xf '$BENTO' -C \"\$1$BENTO_PATH\"" \
    --customize-hook="chroot \"\$1\" $IN_ROOT python3 -m venv /app/.venv" \
    --customize-hook="$COPY_CA" \
    --customize-hook="chroot \"\$1\" $IN_ROOT /app/.venv/bin/pip install --no-cache-dir \
        --disable-pip-version-check --require-hashes --only-binary=:all: \
        -r $BENTO_PATH/env/python/requirements.txt" \
    --customize-hook="chroot \"\$1\" $IN_ROOT /app/.venv/bin/python -m pip uninstall -y -q pip" \
    --customize-hook="chroot \"\$1\" sh -euc '
        chown -R root:root $BENTO_PATH /app/.venv
        chmod -R a+rX,go-w $BENTO_PATH /app/.venv
        chmod 755 $BENTO_PATH/env/docker/entrypoint.sh
        printf \"#!/bin/sh\\nPYTHONPATH=$BENTO_PATH/src exec /app/.venv/bin/python -m cli \\\"\\\$@\\\"\\n\" \
            > /usr/local/bin/tonle
        chmod 755 /usr/local/bin/tonle
        cd /home/bentoml && mkdir -p bentos envs models tmp prometheus_multiproc_dir
        chown bentoml:bentoml prometheus_multiproc_dir
        rm -rf /root/.cache /tmp/* /var/lib/apt/lists/* /var/cache/apt/* /var/log/*
        : > /etc/resolv.conf && echo tonle > /etc/hostname'" \
    bookworm "$ROOTFS" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY bookworm-security main"

# The image's configuration as the Dockerfile sets it, one instruction a line, for
# `podman import --change` / `docker import --change` (which take no HEALTHCHECK: give
# `--health-cmd` to `podman run`, or the orchestrator's probe on /livez).
cat > "$OUT/image.changes" <<CHANGES
ENV LANG=C.UTF-8
ENV LC_ALL=C.UTF-8
ENV PYTHONIOENCODING=UTF-8
ENV PYTHONUNBUFFERED=1
ENV BENTO_PATH=$BENTO_PATH
ENV BENTOML_HOME=/home/bentoml/
ENV BENTOML_CONTAINERIZED=true
ENV VIRTUAL_ENV=/app/.venv
ENV PATH=/app/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR $BENTO_PATH
USER bentoml
EXPOSE 3000
VOLUME /tmp
ENTRYPOINT ["$BENTO_PATH/env/docker/entrypoint.sh"]
CHANGES

tar --numeric-owner --xattrs -C "$ROOTFS" -czf "$OUT/tonle-rootfs.tar.gz" .
mb() { du -sb "$1" | awk '{printf "%.0f", $1 / 1e6}'; }  # apparent size, MB = 10^6 bytes
echo "root file system: $(mb "$ROOTFS") MB, $(mb "$ROOTFS/app/.venv") MB of it the virtualenv ($ROOTFS)"
echo "one-layer tarball: $(mb "$OUT/tonle-rootfs.tar.gz") MB compressed ($OUT/tonle-rootfs.tar.gz)"
