// compose-check validates a docker-compose file with compose-go, the library Docker Compose
// itself uses: the compose-spec JSON schema, interpolation, and model checks (depends_on targets,
// volumes, networks). It needs no Docker engine. Usage: go run ./deploy/compose-check FILE
package main

import (
	"context"
	"fmt"
	"os"
	"sort"

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
	names := make([]string, 0, len(project.Services))
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		service := project.Services[name]
		deps := make([]string, 0, len(service.DependsOn))
		for dep, cfg := range service.DependsOn {
			deps = append(deps, dep+":"+cfg.Condition)
		}
		sort.Strings(deps)
		healthcheck := service.HealthCheck != nil && !service.HealthCheck.Disable
		fmt.Printf("service %s healthcheck=%t depends_on=%v\n", name, healthcheck, deps)
	}
}
