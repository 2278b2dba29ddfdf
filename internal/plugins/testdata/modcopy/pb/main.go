// Plugin pb imports helper and nothing from the SDK.
package main

import "example.com/m/helper"

// Name is exported so that the plugin uses helper.
func Name() string { return "pb-" + helper.Name() }
