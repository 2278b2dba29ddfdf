//go:build !race

package plugins

// raceEnabled: this test binary was built without -race, so the plugins it
// opens must be built without -race too.
const raceEnabled = false
