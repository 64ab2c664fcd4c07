module beamport.test/periodic_counts

go 1.26

// Beam Go's SDK at the version whose Dataflow runner and boot the tests use.
require github.com/apache/beam/sdks/v2 v2.77.0
