// Command pullstudy-stargz serves the stargz snapshotter over containerd's
// snapshots gRPC API, so that pullstudy can measure lazy pulling on one machine.
//
// Debian packages the stargz-snapshotter library
// (golang-github-containerd-stargz-snapshotter-dev) but not its daemon, and the
// library's own "service" package needs k8s.io/cri-api, which Debian lacks.
// This program wires the filesystem and snapshotter packages together itself, and
// reaches every registry over plain HTTP: pullstudy's local registries listen on
// 127.0.0.1 or inside its own test network namespace, never on a public network.
// Built by `make stargz`; driven by pullstudy.backends.lazy.StargzSnapshotter.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/containerd/stargz-snapshotter/snapshot"
	rhttp "github.com/hashicorp/go-retryablehttp"
	"github.com/pelletier/go-toml"
	"google.golang.org/grpc"
)

// plainHTTPHosts reaches a registry over plain HTTP (see the package comment).
func plainHTTPHosts(ref reference.Spec) ([]docker.RegistryHost, error) {
	host := ref.Hostname()
	// The fetcher needs a Transport it can tune (retries); retryablehttp's is what upstream uses.
	retrying := rhttp.NewClient()
	retrying.Logger = nil
	client := retrying.StandardClient()
	client.Timeout = 10 * time.Minute
	return []docker.RegistryHost{{
		Client:       client,
		Host:         host,
		Scheme:       "http",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(client)),
	}}, nil
}

// libraryVersion is the Debian version of the stargz-snapshotter library, set at build time.
var libraryVersion = "unknown"

func run() error {
	version := flag.Bool("version", false, "print the stargz-snapshotter library version and exit")
	address := flag.String("address", "", "unix socket to serve the snapshots API on")
	root := flag.String("root", "", "state directory of the snapshotter")
	configPath := flag.String("config", "", "TOML file in stargz-snapshotter's fs config format; empty for defaults")
	flag.Parse()
	if *version {
		fmt.Printf("pullstudy-stargz %s\n", libraryVersion)
		return nil
	}
	if *address == "" || *root == "" {
		return fmt.Errorf("-address and -root are required")
	}
	var cfg fsconfig.Config
	if *configPath != "" {
		tree, err := toml.LoadFile(*configPath)
		if err != nil {
			return fmt.Errorf("reading %s: %w", *configPath, err)
		}
		if err := tree.Unmarshal(&cfg); err != nil {
			return fmt.Errorf("parsing %s: %w", *configPath, err)
		}
	}
	ctx := context.Background()
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), cfg,
		stargzfs.WithGetSources(source.FromDefaultLabels(plainHTTPHosts)),
		stargzfs.WithOverlayOpaqueType(layer.OverlayOpaqueTrusted))
	if err != nil {
		return fmt.Errorf("configuring the filesystem: %w", err)
	}
	snapshotter, err := snapshot.NewSnapshotter(ctx, filepath.Join(*root, "snapshotter"), fs, snapshot.AsynchronousRemove)
	if err != nil {
		return fmt.Errorf("creating the snapshotter: %w", err)
	}
	// Closing unmounts every lazily fetched layer (FUSE), so nothing stays mounted.
	defer snapshotter.Close()
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		return err
	}
	_ = os.Remove(*address)
	listener, err := net.Listen("unix", *address)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *address, err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(snapshotter))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		server.GracefulStop()
	}()
	log.Printf("pullstudy-stargz: serving on %s", *address)
	return server.Serve(listener)
}

func main() {
	if err := run(); err != nil {
		log.Fatalf("pullstudy-stargz: %v", err)
	}
}
