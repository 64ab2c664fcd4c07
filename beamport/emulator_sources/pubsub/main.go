// The Pub/Sub emulator `beamport serve --emulators pubsub` runs: Google's in-memory fake (pstest) as a server.
//
// One port serves gRPC (Google's client libraries, Beam Python and Go) and Pub/Sub's REST API (Beam Java's
// PubsubIO, whose default client is PubsubJsonClient), as Google's own emulator does: a connection that opens
// with HTTP/2's preface goes to pstest's gRPC server untouched, any other is HTTP/1.1 REST, translated to the
// same server's calls (rest.go).
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc"
)

// http2Preface is how every HTTP/2 (gRPC) connection opens; REST clients speak HTTP/1.1.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

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
	grpcConns, restConns := newConnListener(listener.Addr()), newConnListener(listener.Addr())
	go func() { _ = grpcServer.Serve(grpcConns) }()
	go func() { _ = (&http.Server{Handler: restHandler(&server.GServer)}).Serve(restConns) }()
	go route(listener, grpcConns, restConns)
	fmt.Printf("pstest Pub/Sub emulator listening on %s (gRPC and REST)\n", listener.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	listener.Close()
	server.Close()
}

// route hands each accepted connection to the gRPC or the REST listener by its first bytes.
func route(listener net.Listener, grpcConns, restConns *connListener) {
	for {
		conn, err := listener.Accept()
		if err != nil {
			grpcConns.Close()
			restConns.Close()
			return
		}
		go func() {
			reader := bufio.NewReaderSize(conn, len(http2Preface))
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			target := opener(reader, grpcConns, restConns)
			conn.SetReadDeadline(time.Time{})
			select {
			case target.conns <- &peekedConn{Conn: conn, reader: reader}:
			case <-target.closed:
				conn.Close()
			}
		}()
	}
}

// opener is the listener for a connection that opens as reader's does: gRPC's once it has sent all of HTTP/2's
// preface, REST's from its first byte that differs (a short REST request is not kept waiting for more).
func opener(reader *bufio.Reader, grpcConns, restConns *connListener) *connListener {
	for n := 1; n <= len(http2Preface); n++ {
		opening, err := reader.Peek(n)
		if err != nil || !bytes.Equal(opening, http2Preface[:n]) {
			return restConns
		}
	}
	return grpcConns
}

// peekedConn is a connection whose first bytes were read to route it: they are read again first.
type peekedConn struct {
	net.Conn
	reader *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

// connListener is a net.Listener fed the connections route gives it.
type connListener struct {
	conns  chan net.Conn
	addr   net.Addr
	closed chan struct{}
	once   sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{conns: make(chan net.Conn), addr: addr, closed: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case conn := <-l.conns:
		return conn, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
