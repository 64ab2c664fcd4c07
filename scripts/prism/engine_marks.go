// Added to Beam's Prism by Beamport's scripts/prism-build (package engine): each stage's watermarks, which
// Prism's Job API does not give, for the line execute_marks.go logs every second.

package engine

import "sort"

// BeamportStageMarks is what Prism holds of one stage: its input and output watermarks (milliseconds since the
// epoch; mtime's least and greatest values before any, and at the end) and how many elements wait for it.
type BeamportStageMarks struct {
	Stage   string `json:"stage"`
	InputMs int64  `json:"input_ms"`
	OutMs   int64  `json:"output_ms"`
	Pending int    `json:"pending"`
}

// BeamportStageMarks gives each stage's marks, by stage id. The stages are all added before the job runs.
func (em *ElementManager) BeamportStageMarks() []BeamportStageMarks {
	ids := make([]string, 0, len(em.stages))
	for id := range em.stages {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	marks := make([]BeamportStageMarks, 0, len(ids))
	for _, id := range ids {
		ss := em.stages[id]
		ss.mu.Lock()
		marks = append(marks, BeamportStageMarks{Stage: id, InputMs: int64(ss.input), OutMs: int64(ss.output), Pending: len(ss.pending)})
		ss.mu.Unlock()
	}
	return marks
}
