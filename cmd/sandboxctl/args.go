package main

import (
	"errors"
	"flag"
	"io"
	"strconv"
	"time"
)

// parsed is a subcommand's arguments: flags may come anywhere before "--".
type parsed struct {
	positional []string
	// command is what follows "--"; nil without one.
	command []string
}

// parseArgs parses fs's flags among the positional arguments (sandbox ID,
// K=V) up to "--", after which everything is the command, untouched.
func parseArgs(fs *flag.FlagSet, args []string) (parsed, error) {
	fs.SetOutput(io.Discard)
	var p parsed
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return p, err
			}
			return p, usageError("%s: %v", fs.Name(), err)
		}
		consumed := len(args) - fs.NArg()
		rest := fs.Args()
		if consumed > 0 && args[consumed-1] == "--" {
			p.command = append([]string{}, rest...)
			return p, nil
		}
		if len(rest) == 0 {
			return p, nil
		}
		p.positional = append(p.positional, rest[0])
		args = rest[1:]
	}
}

// durationFlag is a Go duration (30s, 5m) or a number of seconds.
type durationFlag struct{ value time.Duration }

func (d *durationFlag) String() string { return d.value.String() }

func (d *durationFlag) Set(s string) error {
	value, err := time.ParseDuration(s)
	if err != nil {
		seconds, numberErr := strconv.ParseFloat(s, 64)
		if numberErr != nil {
			return errors.New("want a duration such as 30s or 5m, or a number of seconds")
		}
		value = time.Duration(seconds * float64(time.Second))
	}
	if value < 0 {
		return errors.New("negative")
	}
	d.value = value
	return nil
}
