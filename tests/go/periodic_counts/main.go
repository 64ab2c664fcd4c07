// A Beam Go streaming pipeline for the tests (tests/test_go.py) whose source is Beam Go's own: periodic.Sequence,
// an unbounded splittable DoFn, emits a number every --interval (event time: when it is due), fixed windows of
// --window count them, and each window's count is appended to the local file --output as `window start (ms),count,
// least number,greatest number`. Drained, the source stops (Beamport truncates its remainder, as Dataflow does) and
// the window it was in fires with the numbers it had: each number once, in the window of its time.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/periodic"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
)

var (
	output       = flag.String("output", "", "The local file each window's count is appended to (required).")
	interval     = flag.Duration("interval", 200*time.Millisecond, "How often the source emits a number.")
	windowLength = flag.Duration("window", 2*time.Second, "The fixed windows' length.")
)

// span is what a window saw: how many numbers, the least and the greatest.
type span struct {
	Count, Least, Greatest int64
}

func init() {
	register.Function1x2(keyed)
	register.Function2x1(merge)
	register.DoFn3x1[beam.Window, string, span, error](&appendFn{})
}

func keyed(n int64) (string, span) {
	return "all", span{Count: 1, Least: n, Greatest: n}
}

func merge(a, b span) span {
	return span{Count: a.Count + b.Count, Least: min(a.Least, b.Least), Greatest: max(a.Greatest, b.Greatest)}
}

// appendFn appends a window's span to the output file, one line in one write.
type appendFn struct {
	Path string
}

func (f *appendFn) ProcessElement(w beam.Window, _ string, s span) error {
	out, err := os.OpenFile(f.Path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	start := w.(window.IntervalWindow).Start
	_, err = fmt.Fprintf(out, "%d,%d,%d,%d\n", start.Milliseconds(), s.Count, s.Least, s.Greatest)
	return err
}

func main() {
	flag.Parse()
	beam.Init() // a worker (--worker=true) runs its bundles here and never returns
	if *output == "" {
		log.Fatal("--output is required")
	}
	// From the start of the current window (the first window is whole), for good.
	start := time.Now().Truncate(*windowLength)
	end := mtime.Time(math.MaxInt64 / 1000).ToTime()
	p := beam.NewPipeline()
	s := p.Root()
	numbers := periodic.Sequence(s, beam.Create(s, periodic.NewSequenceDefinition(start, end, *interval)))
	windowed := beam.WindowInto(s, window.NewFixedWindows(*windowLength), numbers)
	spans := beam.CombinePerKey(s, merge, beam.ParDo(s, keyed, windowed))
	beam.ParDo0(s, &appendFn{Path: *output}, spans)
	if err := beamx.Run(context.Background(), p); err != nil {
		log.Fatalf("the pipeline failed: %v", err)
	}
}
