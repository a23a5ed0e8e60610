// Package adsclient is an Envoy stand-in for tests: it speaks ADS (state of
// the world) over a real gRPC connection, subscribes to resource types, and
// ACKs or NACKs what it receives when the test says so. With it the xDS
// server, the control plane and the settings API are tested in-process,
// without root and without Envoy.
package adsclient

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// recvTimeout bounds every wait for a response, so a test that expects one
// that never comes fails instead of hanging.
const recvTimeout = 10 * time.Second

// Client is one Envoy's ADS stream.
type Client struct {
	t        testing.TB
	node     *corev3.Node
	stream   grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel   context.CancelFunc
	conn     *grpc.ClientConn
	sentNode bool
	// acked is, per type URL, the version this client last ACKed: what a
	// NACK repeats, as Envoy's does.
	acked     map[string]string
	responses chan *discoveryv3.DiscoveryResponse
	done      chan struct{} // closed when the stream ends
}

// Dial opens an ADS stream to addr as the Envoy node of environment (its
// node cluster). The stream is closed when the test ends.
func Dial(t testing.TB, addr, node, environment string) *Client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dialing ads at %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		_ = conn.Close()
		t.Fatalf("opening ads stream to %s: %v", addr, err)
	}
	c := &Client{
		t: t, node: &corev3.Node{Id: node, Cluster: environment},
		stream: stream, cancel: cancel, conn: conn,
		acked:     map[string]string{},
		responses: make(chan *discoveryv3.DiscoveryResponse, 64),
		done:      make(chan struct{}),
	}
	go c.read()
	t.Cleanup(c.Close)
	return c
}

func (c *Client) read() {
	defer close(c.done)
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			return
		}
		c.responses <- resp
	}
}

// Close ends the stream and the connection, as an Envoy that goes away.
func (c *Client) Close() {
	c.cancel()
	_ = c.conn.Close()
	<-c.done
}

// Subscribe asks for every resource of typeURL (a wildcard subscription),
// telling the server it already runs version ("" for none), as an Envoy that
// reconnects does.
func (c *Client) Subscribe(typeURL, version string) {
	c.t.Helper()
	c.acked[typeURL] = version
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: version})
}

// Recv returns the next response, failing the test when none comes.
func (c *Client) Recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case resp := <-c.responses:
		return resp
	case <-c.done:
		// Responses read before the stream ended are still delivered.
		select {
		case resp := <-c.responses:
			return resp
		default:
		}
		c.t.Fatalf("node %s: the ads stream ended while waiting for a response", c.node.Id)
	case <-time.After(recvTimeout):
		c.t.Fatalf("node %s: no ads response within %s", c.node.Id, recvTimeout)
	}
	return nil
}

// Ack accepts a response.
func (c *Client) Ack(resp *discoveryv3.DiscoveryResponse) {
	c.t.Helper()
	c.acked[resp.GetTypeUrl()] = resp.GetVersionInfo()
	c.send(&discoveryv3.DiscoveryRequest{
		TypeUrl:       resp.GetTypeUrl(),
		VersionInfo:   resp.GetVersionInfo(),
		ResponseNonce: resp.GetNonce(),
	})
}

// Nack rejects a response with message, keeping the version ACKed before.
func (c *Client) Nack(resp *discoveryv3.DiscoveryResponse, message string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{
		TypeUrl:       resp.GetTypeUrl(),
		VersionInfo:   c.acked[resp.GetTypeUrl()],
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   &status.Status{Code: int32(codes.InvalidArgument), Message: message},
	})
}

func (c *Client) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if !c.sentNode {
		// Envoy sends its node on the first request of a stream only.
		req.Node, c.sentNode = c.node, true
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("node %s: sending %s request: %v", c.node.Id, req.GetTypeUrl(), err)
	}
}
