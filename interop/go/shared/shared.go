// Package shared holds what the Go host and the Go plugin agree on: the handshake and the
// go-plugin plugin definition serving kv.KV and counter.Counter on one gRPC server.
package shared

import (
	"context"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	counter "plugsconc-interop/counterpb"
	kv "plugsconc-interop/kvpb"
)

// Handshake of the kv plugins (Go and Rust alike).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BASIC_PLUGIN",
	MagicCookieValue: "hello",
}

// Clients is what the host gets when it dispenses "kv".
type Clients struct {
	KV      kv.KVClient
	Counter counter.CounterClient
	Broker  *plugin.GRPCBroker
}

// KVPlugin is the go-plugin definition; Make builds the plugin side's services.
type KVPlugin struct {
	plugin.Plugin
	Make func(broker *plugin.GRPCBroker) (kv.KVServer, counter.CounterServer)
}

// GRPCServer registers both services on the plugin's server.
func (p *KVPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	kvServer, counterServer := p.Make(broker)
	kv.RegisterKVServer(s, kvServer)
	counter.RegisterCounterServer(s, counterServer)
	return nil
}

// GRPCClient builds the host's stubs on the plugin connection.
func (p *KVPlugin) GRPCClient(ctx context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &Clients{KV: kv.NewKVClient(c), Counter: counter.NewCounterClient(c), Broker: broker}, nil
}
