// Command pie is a Go program, not a plugin. It imports package plugin so
// that, built with -buildmode=pie and cgo, it is an ELF shared object that
// exports package fingerprints like a plugin: only its build information
// tells it apart.
package main

import _ "plugin"

func main() {}
