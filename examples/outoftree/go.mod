module example.com/secretless-linetoken

go 1.26

require github.com/secretless-broker/secretless-broker/sdk v0.0.0

// The SDK of a local secretless-broker checkout. A plugin loads only into a
// broker built with the SDK compiled from the same place: for a broker built
// without -trimpath (as the README builds it), that is the same absolute
// directory, which this relative path gives when the module stays where it
// is in the checkout. Anywhere else, use the absolute path that
// "secretless-broker plugins env" prints. See docs/plugins/build-and-secure.md
// for brokers built with -trimpath and for a published SDK version.
replace github.com/secretless-broker/secretless-broker/sdk => ../../sdk
