package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/alpha-edge/alpha/blueprint"
)

func init() {
	register("blueprint", "validate blueprints, print the JSON Schema", runBlueprint)
}

// blueprintCommands are the subcommands of "alpha blueprint"; other files add
// to it (sign).
var blueprintCommands = map[string]func(ctx context.Context, args []string) error{
	"validate": runBlueprintValidate,
	"schema":   runBlueprintSchema,
}

func runBlueprint(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: alpha blueprint validate FILE... | schema | sign ...")
	}
	sub, ok := blueprintCommands[args[0]]
	if !ok {
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
	return sub(ctx, args[1:])
}

func runBlueprintValidate(_ context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: alpha blueprint validate FILE...")
	}
	bad := 0
	for _, f := range args {
		data, err := os.ReadFile(f)
		if err == nil {
			_, err = blueprint.Parse(data)
		}
		var errs blueprint.Errors
		switch {
		case errors.As(err, &errs):
			bad++
			for _, e := range errs {
				fmt.Fprintf(os.Stderr, "%s: %s\n", f, e.Error())
			}
		case err != nil:
			bad++
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
		default:
			fmt.Printf("%s: ok\n", f)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d blueprints invalid", bad, len(args))
	}
	return nil
}

func runBlueprintSchema(context.Context, []string) error {
	s, err := blueprint.Schema()
	if err != nil {
		return err
	}
	fmt.Println(string(s))
	return nil
}
