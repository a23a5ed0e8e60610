# The image of manifests/ (ghcr.io/nemesis-ml/nemesis): one static binary
# for `serve`, `migrate` and `sidecar` (cmd/nemesis: no development tools),
# on a distroless non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /nemesis ./cmd/nemesis

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /nemesis /nemesis
USER 65532:65532
ENTRYPOINT ["/nemesis"]
