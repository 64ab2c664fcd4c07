// gcs_upload writes an object with Go's storage client in chunks (a resumable upload, as Beam Go's Dataflow
// runner stages its worker binary), reads it back and compares. STORAGE_EMULATOR_HOST names the endpoint.
// Usage: gcs_upload BUCKET OBJECT SIZE CHUNK
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strconv"

	"cloud.google.com/go/storage"
)

func main() {
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(bucket, object, sizeArg, chunkArg string) error {
	size, err := strconv.Atoi(sizeArg)
	if err != nil {
		return err
	}
	chunk, err := strconv.Atoi(chunkArg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	client, err := storage.NewClient(ctx) // with STORAGE_EMULATOR_HOST: that endpoint, no credentials
	if err != nil {
		return err
	}
	defer client.Close()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		return err
	}
	w := client.Bucket(bucket).Object(object).NewWriter(ctx)
	w.ChunkSize = chunk
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	r, err := client.Bucket(bucket).Object(object).NewReader(ctx)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	defer r.Close()
	back, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(back, data) {
		return fmt.Errorf("read back %d bytes, not the %d written", len(back), len(data))
	}
	fmt.Printf("uploaded %d bytes in chunks of %d\n", size, chunk)
	return nil
}
