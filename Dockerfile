# The image of manifests/ (ghcr.io/nemesis-ml/nemesis): one static binary
# for `serve`, `migrate` and `sidecar` (cmd/nemesis: no development tools),
# on a distroless non-root base.
#
# The bases are build arguments only so that a machine with no registry can
# build this file unchanged from local stand-ins (make images,
# hack/images.sh); the defaults are what everyone else pulls.
ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /nemesis ./cmd/nemesis

# The development tools (cmd/nemesis-dev), for the demo model of
# manifests-dev/demo: docker build --target dev. Built only when asked for.
FROM build AS build-dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /nemesis-dev ./cmd/nemesis-dev

FROM ${BASE_IMAGE} AS dev
COPY --from=build-dev /nemesis-dev /nemesis-dev
USER 65532:65532
ENTRYPOINT ["/nemesis-dev"]

FROM ${BASE_IMAGE}
COPY --from=build /nemesis /nemesis
USER 65532:65532
ENTRYPOINT ["/nemesis"]
