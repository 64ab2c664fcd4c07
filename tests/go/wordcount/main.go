// A Beam Go wordcount for the tests (tests/test_go.py): the same binary runs on Go's direct runner and, with
// --runner=dataflow, is submitted to Beamport by Beam Go's Dataflow runner, which stages it as the job's
// worker binary. --input and --output may be local paths or gs:// (through STORAGE_EMULATOR_HOST).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"regexp"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
)

var (
	input  = flag.String("input", "", "File(s) to read (required).")
	output = flag.String("output", "", "Output file (required).")
	slow   = flag.Int("slow_millis", 0, "Sleep this long per line (a job slow enough to cancel).")
	failOn = flag.String("fail_on", "", "Fail the DoFn on this word (a failing job).")
	words  = beam.NewCounter("wordcount", "words")
	wordRE = regexp.MustCompile(`[a-zA-Z]+('[a-z])?`)
)

func init() {
	register.DoFn3x1[context.Context, string, func(string), error](&extractFn{})
	register.Function2x1(formatFn)
	register.Emitter1[string]()
}

// extractFn is a struct DoFn: its fields travel with the pipeline to the workers (flags do not).
type extractFn struct {
	SlowMillis int    `json:"slowMillis"`
	FailOn     string `json:"failOn"`
}

func (f *extractFn) ProcessElement(ctx context.Context, line string, emit func(string)) error {
	time.Sleep(time.Duration(f.SlowMillis) * time.Millisecond)
	for _, word := range wordRE.FindAllString(line, -1) {
		if word == f.FailOn {
			return fmt.Errorf("wordcount refuses the word %v", word)
		}
		words.Inc(ctx, 1)
		emit(word)
	}
	return nil
}

func formatFn(word string, count int) string {
	return fmt.Sprintf("%s: %v", word, count)
}

func main() {
	flag.Parse()
	beam.Init() // a worker (--worker=true) runs its bundles here and never returns
	if *input == "" || *output == "" {
		log.Fatal("--input and --output are required")
	}
	p := beam.NewPipeline()
	s := p.Root()
	lines := textio.Read(s, *input)
	counted := stats.Count(s, beam.ParDo(s, &extractFn{SlowMillis: *slow, FailOn: *failOn}, lines))
	textio.Write(s, *output, beam.ParDo(s, formatFn, counted))
	if err := beamx.Run(context.Background(), p); err != nil {
		log.Fatalf("the pipeline failed: %v", err)
	}
}
