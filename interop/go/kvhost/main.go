// Command kvhost-go is a go-plugin host for KV plugins (Go or not). In test mode it checks Put,
// Get, Echo and, with -callback, counter.Counter calling the host back through the broker, then
// prints one JSON line. In bench mode it prints the benchmark JSON that benches/run.sh compares
// with plugsconc's harness.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	counter "plugsconc-interop/counterpb"
	kv "plugsconc-interop/kvpb"
	"plugsconc-interop/shared"
)

var (
	pluginPath  = flag.String("plugin", "", "path of the KV plugin binary")
	autoMTLS    = flag.Bool("automtls", false, "use AutoMTLS")
	mode        = flag.String("mode", "test", "test or bench")
	callback    = flag.Bool("callback", true, "test the broker callback (counter.Counter -> AddHelper)")
	seq         = flag.Int("seq", 20000, "sequential calls measured")
	warmup      = flag.Int("warmup", 1000, "warm-up calls")
	callersFlag = flag.String("callers", "1,8,64", "concurrent caller counts")
	perCaller   = flag.Int("per-caller", 5000, "calls per caller")
	startupRuns = flag.Int("startup-runs", 20, "start-up runs")
	payload     = flag.Int("payload", 16, "Echo payload bytes")
	memPlugins  = flag.Int("memory-plugins", 10, "plugins started for the memory figure")
)

func newClient() *plugin.Client {
	return plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		Plugins:          map[string]plugin.Plugin{"kv": &shared.KVPlugin{}},
		Cmd:              exec.Command(*pluginPath),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         *autoMTLS,
		Managed:          true,
		StartTimeout:     30 * time.Second,
		Stderr:           ioutil.Discard,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   "kvhost-go",
			Level:  hclog.Warn,
			Output: os.Stderr,
		}),
	})
}

func dispense(client *plugin.Client) (*shared.Clients, error) {
	rpc, err := client.Client()
	if err != nil {
		return nil, err
	}
	raw, err := rpc.Dispense("kv")
	if err != nil {
		return nil, err
	}
	return raw.(*shared.Clients), nil
}

type adder struct{}

func (adder) Sum(ctx context.Context, req *counter.SumRequest) (*counter.SumResponse, error) {
	return &counter.SumResponse{R: req.A + req.B}, nil
}

// putViaHost exposes AddHelper under a fresh broker id for one Counter.Put, as go-plugin's
// bidirectional example does.
func putViaHost(c *shared.Clients, key string, value int64) error {
	id := c.Broker.NextId()
	var server *grpc.Server
	ready := make(chan struct{})
	go c.Broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		server = grpc.NewServer(opts...)
		counter.RegisterAddHelperServer(server, adder{})
		close(ready)
		return server
	})
	_, err := c.Counter.Put(context.Background(), &counter.PutRequest{AddServer: id, Key: key, Value: value})
	<-ready
	server.Stop()
	return err
}

func runTest() error {
	client := newClient()
	defer client.Kill()
	c, err := dispense(client)
	if err != nil {
		return fmt.Errorf("start: %v", err)
	}
	ctx := context.Background()
	checks := []string{}
	if _, err := c.KV.Put(ctx, &kv.PutRequest{Key: "hello", Value: []byte("world")}); err != nil {
		return fmt.Errorf("put: %v", err)
	}
	checks = append(checks, "put")
	got, err := c.KV.Get(ctx, &kv.GetRequest{Key: "hello"})
	if err != nil || !got.Found || string(got.Value) != "world" {
		return fmt.Errorf("get: %v %v", got, err)
	}
	checks = append(checks, "get")
	data := []byte{0, 1, 2, 3, 250}
	echo, err := c.KV.Echo(ctx, &kv.EchoRequest{Data: data})
	if err != nil || !bytes.Equal(echo.Data, data) {
		return fmt.Errorf("echo: %v %v", echo, err)
	}
	checks = append(checks, "echo")
	if *callback {
		for _, v := range []int64{2, 3} {
			if err := putViaHost(c, "c", v); err != nil {
				return fmt.Errorf("counter put (broker callback): %v", err)
			}
		}
		total, err := c.Counter.Get(ctx, &counter.GetRequest{Key: "c"})
		if err != nil || total.Value != 5 {
			return fmt.Errorf("counter get: %v %v", total, err)
		}
		checks = append(checks, "callback")
	}
	client.Kill()
	out, _ := json.Marshal(map[string]interface{}{"ok": true, "automtls": *autoMTLS, "checks": checks})
	fmt.Println(string(out))
	return nil
}

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1)*q + 0.5)
	return float64(sorted[i].Nanoseconds()) / 1000
}

func rssKB() int64 {
	status, _ := ioutil.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			v, _ := strconv.ParseInt(fields[1], 10, 64)
			return v
		}
	}
	return 0
}

func runBench() error {
	ctx := context.Background()
	data := bytes.Repeat([]byte{0x5a}, *payload)
	client := newClient()
	c, err := dispense(client)
	if err != nil {
		return err
	}
	for i := 0; i < *warmup; i++ {
		if _, err := c.KV.Echo(ctx, &kv.EchoRequest{Data: data}); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, 0, *seq)
	var total time.Duration
	for i := 0; i < *seq; i++ {
		at := time.Now()
		if _, err := c.KV.Echo(ctx, &kv.EchoRequest{Data: data}); err != nil {
			return err
		}
		d := time.Since(at)
		total += d
		lat = append(lat, d)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	throughput := []map[string]interface{}{}
	for _, field := range strings.Split(*callersFlag, ",") {
		callers, err := strconv.Atoi(field)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		at := time.Now()
		for i := 0; i < callers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < *perCaller; j++ {
					if _, err := c.KV.Echo(ctx, &kv.EchoRequest{Data: data}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(at).Seconds()
		select {
		case err := <-errs:
			return err
		default:
		}
		calls := callers * *perCaller
		throughput = append(throughput, map[string]interface{}{
			"callers": callers, "calls": calls, "calls_per_sec": float64(calls) / elapsed,
		})
	}
	client.Kill()

	startups := []time.Duration{}
	for i := 0; i < *startupRuns; i++ {
		at := time.Now()
		client := newClient()
		c, err := dispense(client)
		if err != nil {
			return err
		}
		if _, err := c.KV.Echo(ctx, &kv.EchoRequest{Data: data}); err != nil {
			return err
		}
		startups = append(startups, time.Since(at))
		client.Kill()
	}
	sort.Slice(startups, func(i, j int) bool { return startups[i] < startups[j] })

	before := rssKB()
	clients := []*plugin.Client{}
	for i := 0; i < *memPlugins; i++ {
		client := newClient()
		c, err := dispense(client)
		if err != nil {
			return err
		}
		if _, err := c.KV.Echo(ctx, &kv.EchoRequest{Data: data}); err != nil {
			return err
		}
		clients = append(clients, client)
	}
	after := rssKB()
	for _, client := range clients {
		client.Kill()
	}

	report := map[string]interface{}{
		"impl": "go-plugin", "transport": "unix", "automtls": *autoMTLS, "payload_bytes": *payload,
		"seq": map[string]interface{}{
			"calls": *seq, "p50_us": percentile(lat, 0.5), "p99_us": percentile(lat, 0.99),
			"mean_us": float64(total.Nanoseconds()) / 1000 / float64(len(lat)),
		},
		"throughput": throughput,
		"startup": map[string]interface{}{
			"runs": *startupRuns, "p50_ms": percentile(startups, 0.5) / 1000,
			"min_ms": percentile(startups, 0) / 1000,
		},
		"host_rss_kb_per_plugin": float64(after-before) / float64(*memPlugins),
	}
	out, err := json.Marshal(report)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func main() {
	flag.Parse()
	if *pluginPath == "" {
		fmt.Fprintln(os.Stderr, "usage: kvhost-go -plugin <path> [-automtls] [-mode test|bench]")
		os.Exit(2)
	}
	defer plugin.CleanupClients()
	var err error
	if *mode == "bench" {
		err = runBench()
	} else {
		err = runTest()
	}
	if err != nil {
		if *mode == "test" {
			out, _ := json.Marshal(map[string]interface{}{"ok": false, "error": err.Error()})
			fmt.Println(string(out))
		} else {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		plugin.CleanupClients()
		os.Exit(1)
	}
}
