// A Beam Go pipeline with Beam Go's own BigQuery I/O, for the tests (tests/test_go.py): with --table and --input it
// counts the words of the input and writes them to the table (bigqueryio.Write); with --table and --output it
// reads the table back (bigqueryio.Query, standard SQL) and writes "word: count" lines. Submitted to Beamport by
// Beam Go's Dataflow runner, its workers reach the BigQuery emulator through Beamport's Google API gateway: the
// program names no endpoint.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"reflect"
	"regexp"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/bigqueryio"
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
	project = flag.String("table_project", "", "The table's project (required).")
	table   = flag.String("table", "", "DATASET.TABLE to write or read (required).")
	input   = flag.String("input", "", "Text to count into the table.")
	output  = flag.String("output", "", "Where to write the table's rows.")
	wordRE  = regexp.MustCompile(`[a-zA-Z]+('[a-z])?`)
)

// WordCount is a row of the table.
type WordCount struct {
	Word  string `bigquery:"word"`
	Count int64  `bigquery:"count"`
}

func init() {
	beam.RegisterType(reflect.TypeOf((*WordCount)(nil)).Elem())
	register.Function2x0(extractFn)
	register.Function2x1(toRowFn)
	register.Function1x1(formatFn)
	register.Emitter1[string]()
}

func extractFn(line string, emit func(string)) {
	for _, word := range wordRE.FindAllString(line, -1) {
		emit(word)
	}
}

func toRowFn(word string, count int) WordCount {
	return WordCount{Word: word, Count: int64(count)}
}

func formatFn(row WordCount) string {
	return fmt.Sprintf("%s: %v", row.Word, row.Count)
}

func main() {
	flag.Parse()
	beam.Init() // a worker (--worker=true) runs its bundles here and never returns
	if *project == "" || *table == "" || (*input == "") == (*output == "") {
		log.Fatal("--table_project, --table and one of --input and --output are required")
	}
	p := beam.NewPipeline()
	s := p.Root()
	if *input != "" {
		counted := stats.Count(s, beam.ParDo(s, extractFn, textio.Read(s, *input)))
		bigqueryio.Write(s, *project, *project+":"+*table, beam.ParDo(s, toRowFn, counted))
	} else {
		dataset, name, _ := strings.Cut(*table, ".")
		query := fmt.Sprintf("SELECT word, count FROM `%s.%s.%s`", *project, dataset, name)
		rows := bigqueryio.Query(s, *project, query, reflect.TypeOf(WordCount{}), bigqueryio.UseStandardSQL())
		textio.Write(s, *output, beam.ParDo(s, formatFn, rows))
	}
	if err := beamx.Run(context.Background(), p); err != nil {
		log.Fatalf("the pipeline failed: %v", err)
	}
}
