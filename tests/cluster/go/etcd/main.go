// Command etcd is etcd 3.5 built as a dependency (its own module has replace directives,
// so `go install` refuses it).  tests/cluster/setup.sh copies this file into a generated
// wrapper module in the cache directory.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
