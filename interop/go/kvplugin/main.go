// Command kvplugin-go is a go-plugin gRPC plugin serving kv.KV (in memory) and counter.Counter
// (each Put dials the host's AddHelper through the broker to compute the new value), with gRPC
// reflection. Every kv Put logs one hclog line per level, so a host can check that levels
// survive the trip.
package main

import (
	"context"
	"os"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	counter "plugsconc-interop/counterpb"
	kv "plugsconc-interop/kvpb"
	"plugsconc-interop/shared"
)

var logger = hclog.New(&hclog.LoggerOptions{
	Name:       "kvplugin-go",
	Level:      hclog.Trace,
	Output:     os.Stderr,
	JSONFormat: true,
})

type store struct {
	mu     sync.Mutex
	values map[string][]byte
}

func (s *store) Put(ctx context.Context, req *kv.PutRequest) (*kv.PutResponse, error) {
	logger.Trace("kv put trace", "key", req.Key)
	logger.Debug("kv put debug", "key", req.Key)
	logger.Info("kv put info", "key", req.Key)
	logger.Warn("kv put warn", "key", req.Key)
	logger.Error("kv put error", "key", req.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[req.Key] = req.Value
	return &kv.PutResponse{}, nil
}

func (s *store) Get(ctx context.Context, req *kv.GetRequest) (*kv.GetResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	value, found := s.values[req.Key]
	return &kv.GetResponse{Value: value, Found: found}, nil
}

func (s *store) Echo(ctx context.Context, req *kv.EchoRequest) (*kv.EchoResponse, error) {
	return &kv.EchoResponse{Data: req.Data}, nil
}

type counterServer struct {
	broker *plugin.GRPCBroker
	mu     sync.Mutex
	values map[string]int64
}

func (c *counterServer) Put(ctx context.Context, req *counter.PutRequest) (*counter.PutResponse, error) {
	conn, err := c.broker.Dial(req.AddServer)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c.mu.Lock()
	old := c.values[req.Key]
	c.mu.Unlock()
	sum, err := counter.NewAddHelperClient(conn).Sum(ctx, &counter.SumRequest{A: old, B: req.Value})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.values[req.Key] = sum.R
	c.mu.Unlock()
	return &counter.PutResponse{}, nil
}

func (c *counterServer) Get(ctx context.Context, req *counter.GetRequest) (*counter.GetResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &counter.GetResponse{Value: c.values[req.Key]}, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins: map[string]plugin.Plugin{
			"kv": &shared.KVPlugin{Make: func(broker *plugin.GRPCBroker) (kv.KVServer, counter.CounterServer) {
				return &store{values: map[string][]byte{}}, &counterServer{broker: broker, values: map[string]int64{}}
			}},
		},
		// Reflection lets hosts call the plugin by method name without its protos (go-plugin
		// registers it itself from v1.2; this one predates that).
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			server := plugin.DefaultGRPCServer(opts)
			reflection.Register(server)
			return server
		},
		Logger: logger,
	})
}
