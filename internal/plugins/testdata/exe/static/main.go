// Command static is a statically linked Go program without package
// fingerprints, standing in for a broker that cannot load plugins.
package main

func main() {}
