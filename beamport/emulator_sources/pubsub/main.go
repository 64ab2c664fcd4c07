// The Pub/Sub emulator `beamport serve --emulators pubsub` runs: Google's in-memory fake (pstest) as a server.
//
// One port serves gRPC (Google's client libraries, Beam Python and Go) and Pub/Sub's REST API (Beam Java's
// PubsubIO, whose default client is PubsubJsonClient), as Google's own emulator does: cmux hands a connection
// that opens with HTTP/2's preface to pstest's gRPC server, any other to the REST API (rest.go), which calls the
// same server.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/soheilhy/cmux"
	"google.golang.org/grpc"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8085, "port to listen on")
	flag.Parse()
	var grpcServer *grpc.Server
	// pstest also listens on a port of its own on localhost; nothing is told of it.
	server := pstest.NewServerWithCallback(0, func(s *grpc.Server) { grpcServer = s })
	listener, err := net.Listen("tcp", fmt.Sprintf("%s:%d", *host, *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := cmux.New(listener)
	grpcConns := mux.Match(cmux.HTTP2())
	restConns := mux.Match(cmux.Any())
	go func() { _ = grpcServer.Serve(grpcConns) }()
	go func() { _ = (&http.Server{Handler: restHandler(&server.GServer)}).Serve(restConns) }()
	go func() { _ = mux.Serve() }()
	fmt.Printf("pstest Pub/Sub emulator listening on %s (gRPC and REST)\n", listener.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	listener.Close()
	server.Close()
}
