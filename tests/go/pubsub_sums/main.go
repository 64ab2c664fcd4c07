// A Beam Go streaming pipeline for the tests (tests/test_go.py), unchanged from what a user submits to Dataflow:
// Beam Go's pubsubio reads messages `key,number` from a subscription (event time in the `ts` attribute, id in
// `id`), sums them per key in one-minute fixed windows and publishes each sum to a topic as `key,sum,window start`
// (seconds), as tests/pipelines/pubsub_sums.py does in Python. pubsubio's Read and Write are Dataflow-native
// transforms; Beam Go's Dataflow runner marks the job streaming (its read is unbounded).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/pubsubio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
)

var (
	inputSubscription = flag.String("input_subscription", "", "projects/P/subscriptions/S to read (required).")
	outputTopic       = flag.String("output_topic", "", "projects/P/topics/T to publish the sums to (required).")
)

func init() {
	register.Function1x2(parseFn)
	register.Function3x1(formatFn)
}

// parseFn: `key,number` -> (key, number).
func parseFn(data []byte) (string, int) {
	fields := strings.SplitN(string(data), ",", 2)
	if len(fields) != 2 {
		panic(fmt.Sprintf("not key,number: %q", data))
	}
	number, err := strconv.Atoi(fields[1])
	if err != nil {
		panic(err)
	}
	return fields[0], number
}

// formatFn: a window's sum of a key -> `key,sum,window start`.
func formatFn(w beam.Window, key string, sum int) []byte {
	start := w.(window.IntervalWindow).Start
	return []byte(fmt.Sprintf("%s,%d,%d", key, sum, start.Milliseconds()/1000))
}

// projectAndName splits projects/P/KIND/NAME: pubsubio names the project apart.
func projectAndName(full, kind string) (string, string) {
	parts := strings.Split(full, "/")
	if len(parts) != 4 || parts[0] != "projects" || parts[2] != kind {
		log.Fatalf("%q is not projects/PROJECT/%s/NAME", full, kind)
	}
	return parts[1], parts[3]
}

func main() {
	flag.Parse()
	beam.Init() // a worker (--worker=true) runs its bundles here and never returns
	if *inputSubscription == "" || *outputTopic == "" {
		log.Fatal("--input_subscription and --output_topic are required")
	}
	inProject, subscription := projectAndName(*inputSubscription, "subscriptions")
	outProject, topic := projectAndName(*outputTopic, "topics")

	p := beam.NewPipeline()
	s := p.Root()
	messages := pubsubio.Read(s, inProject, pubsubio.ReadOptions{
		Subscription:       subscription,
		IDAttribute:        "id",
		TimestampAttribute: "ts",
	})
	windowed := beam.WindowInto(s, window.NewFixedWindows(time.Minute), messages)
	sums := stats.SumPerKey(s, beam.ParDo(s, parseFn, windowed))
	pubsubio.Write(s, outProject, topic, beam.ParDo(s, formatFn, sums))
	if err := beamx.Run(context.Background(), p); err != nil {
		log.Fatalf("the pipeline failed: %v", err)
	}
}
