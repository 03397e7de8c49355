// compose-check validates a docker-compose file with compose-go, the library Docker Compose
// itself uses: the compose-spec JSON schema, interpolation and model checks (depends_on targets,
// volumes, networks). It needs no Docker engine. On success it prints the normalized project as
// JSON (what `docker compose config --format json` would print), so tests can inspect it.
//
// Usage: go run ./deploy/compose-check docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check docker-compose.yml")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{os.Args[1]},
		cli.WithOsEnv,
		cli.WithName("mdm-broker-check"),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid options:", err)
		os.Exit(2)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid compose file:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot render project:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
