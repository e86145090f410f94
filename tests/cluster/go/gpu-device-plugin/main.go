// Command gpu-device-plugin is the real node's stand-in for NVIDIA's device plugin: it
// speaks the kubelet's device plugin API v1beta1, registers nvidia.com/gpu with the
// kubelet's device manager and answers Allocate as NVIDIA's plugin does with its default
// device-list strategy (envvar): NVIDIA_VISIBLE_DEVICES=<the allocated device IDs>.
// There are no GPUs behind the IDs.  Each allocation is logged as one line
// "allocate <id>,<id>" on stderr.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
	stop    chan struct{}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list once (all healthy) and holds the stream open.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	select {
	case <-p.stop:
	case <-s.Context().Done():
	}
	return nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

// Allocate: the envvar strategy, one NVIDIA_VISIBLE_DEVICES per container.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		ids := strings.Join(c.DevicesIDs, ",")
		log.Printf("allocate %s", ids)
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": ids},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func register(dir, endpoint, resource string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}

func main() {
	dir := flag.String("device-plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugins folder")
	ids := flag.String("device-ids", "", "comma-separated device IDs to advertise (e.g. GPU-<uuid>,...)")
	resource := flag.String("resource-name", "nvidia.com/gpu", "the extended resource")
	endpoint := flag.String("endpoint", "nvidia-gpu.sock", "this plugin's socket name in -device-plugin-dir")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	p := &plugin{stop: make(chan struct{})}
	for _, id := range strings.Split(*ids, ",") {
		if id != "" {
			p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
		}
	}
	if len(p.devices) == 0 {
		log.Fatal("no -device-ids")
	}
	sock := filepath.Join(*dir, *endpoint)
	_ = os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	go func() {
		if err := server.Serve(lis); err != nil {
			log.Fatal(err)
		}
	}()
	if err := register(*dir, *endpoint, *resource); err != nil {
		log.Fatalf("register with the kubelet: %v", err)
	}
	log.Printf("registered %s with %d devices: %s", *resource, len(p.devices), *ids)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	close(p.stop)
	server.Stop()
	_ = os.Remove(sock)
}
