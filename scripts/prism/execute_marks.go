// Added to Beam's Prism by Beamport's scripts/prism-build (package internal): the transforms of each stage,
// logged once as a job starts, so that Beamport can name the stages whose watermarks it logs every second.

package internal

// beamportStageTransforms gives each stage's transform ids, by stage id.
func beamportStageTransforms(stages map[string]*stage) map[string][]string {
	transforms := make(map[string][]string, len(stages))
	for id, s := range stages {
		transforms[id] = s.transforms
	}
	return transforms
}
