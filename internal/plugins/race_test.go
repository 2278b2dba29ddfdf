//go:build race

package plugins

// raceEnabled: this test binary was built with -race, so the plugins it
// opens must be built with -race too.
const raceEnabled = true
