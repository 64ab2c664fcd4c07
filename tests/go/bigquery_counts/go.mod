module beamport.test/bigquery_counts

go 1.26

// Beam Go's SDK at the version whose Dataflow runner and boot the tests use (its bigqueryio uses Google's Go
// BigQuery client, cloud.google.com/go/bigquery v1.83.0, which names no endpoint of its own).
require github.com/apache/beam/sdks/v2 v2.77.0
