# One image, all three binaries: kbeast-operator (the entrypoint), kbeast-query (the query pods
# name it as their command) and the kubectl plugin kubectl-kbeast (copy it out to install it).
# One image to mirror, scan and pin; the query code is small.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/install-build-deps.sh \
 && CARGO_TARGET_DIR=/src/target scripts/build-binaries.sh --release \
 && mkdir -p /out \
 && cp target/release/kbeast-operator /out/ \
 && cp target/release/kbeast-query target/release/kubectl-kbeast /out/
# The built-in embedder's weights (all-MiniLM-L6-v2, about 90 MB), pinned by version and sha256;
# query pods never download them.
RUN mkdir -p /models \
 && cp -r "$(KBEAST_MODELS_DIR=/tmp/models scripts/fetch-minilm.sh)" /models/all-MiniLM-L6-v2

# distroless: no shell, no package manager; runs as the nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kbeast" \
      org.opencontainers.image.description="Kubernetes operator and query server for multi-tenant knowledge bases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kbeast/kbeast"
COPY --from=build /out/ /usr/local/bin/
COPY --from=build /models/ /usr/local/share/kbeast/models/
# kbeast-query's default --builtin-model-dir, stated for custom images that move it.
ENV KBEAST_BUILTIN_MODEL_DIR=/usr/local/share/kbeast/models/all-MiniLM-L6-v2
USER 65532:65532
# No HEALTHCHECK: Kubernetes probes check the processes.
ENTRYPOINT ["/usr/local/bin/kbeast-operator"]
CMD ["run"]
