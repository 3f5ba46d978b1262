package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// envSources collects --env and --env-file flags in their order: a later
// one replaces an earlier one's key. No message about them ever holds a
// value: they may be secrets.
type envSources struct {
	sources []envSource
}

type envSource struct {
	// file: arg is an env file's path; else K=V or K.
	file bool
	arg  string
}

// envFlag is one of the flags that add to an envSources.
type envFlag struct {
	sources *envSources
	file    bool
}

func (f envFlag) String() string { return "" }

func (f envFlag) Set(arg string) error {
	f.sources.sources = append(f.sources.sources, envSource{file: f.file, arg: arg})
	return nil
}

// environment reads what resolve needs from outside: sandboxctl's own
// environment and files.
type environment struct {
	lookup   func(string) (string, bool)
	readFile func(string) ([]byte, error)
}

var processEnvironment = environment{lookup: os.LookupEnv, readFile: os.ReadFile}

// resolve returns the env the flags give: --env K=V as is, --env K with
// the value of K in sandboxctl's environment, --env-file's lines.
func (s *envSources) resolve(from environment) (map[string]string, error) {
	env := map[string]string{}
	for i, source := range s.sources {
		if source.file {
			if err := readEnvFile(source.arg, from.readFile, env); err != nil {
				return nil, err
			}
			continue
		}
		name, value, hasValue := strings.Cut(source.arg, "=")
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("--env (env flag %d): %w", i+1, err)
		}
		if !hasValue {
			var set bool
			if value, set = from.lookup(name); !set {
				return nil, fmt.Errorf("--env %s: %s is not set in sandboxctl's environment", name, name)
			}
		}
		env[name] = value
	}
	return env, nil
}

// readEnvFile adds the KEY=VALUE lines of path to env. Blank lines and
// lines starting with # are skipped, "export " before a key is allowed,
// and the value is everything after the first = up to the end of the line
// (a CRLF's \r dropped), with no quote or escape processing, as docker's
// --env-file. Errors name the line, never its content.
func readEnvFile(path string, readFile func(string) ([]byte, error), env map[string]string) error {
	content, err := readFile(path)
	if err != nil {
		return fmt.Errorf("--env-file: %w", err)
	}
	defer clear(content)
	scanner := bufio.NewScanner(bytes.NewReader(content))
	scanner.Buffer(nil, len(content)+1)
	for number := 1; scanner.Scan(); number++ {
		line := strings.TrimSuffix(scanner.Text(), "\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		trimmed = strings.TrimPrefix(trimmed, "export ")
		name, value, ok := strings.Cut(trimmed, "=")
		if !ok {
			return fmt.Errorf("--env-file %s line %d: no '=' (want KEY=VALUE)", path, number)
		}
		if err := validName(strings.TrimRight(name, " \t")); err != nil {
			return fmt.Errorf("--env-file %s line %d: %w", path, number, err)
		}
		env[strings.TrimRight(name, " \t")] = value
	}
	return scanner.Err()
}

// validName accepts the names the sandbox accepts: [A-Za-z_][A-Za-z0-9_]*.
// Checking here lets an env file's error name its line. The error never
// quotes the name: a mistyped --env "$TOKEN" would put a secret there.
func validName(name string) error {
	if name == "" {
		return errors.New("empty variable name")
	}
	for i, c := range name {
		letter := c == '_' || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return errors.New("invalid variable name: letters, digits and _ only, not starting with a digit")
		}
	}
	return nil
}

// setArguments parses env's K=V arguments.
func setArguments(args []string) (map[string]string, error) {
	vars := map[string]string{}
	for i, arg := range args {
		name, value, ok := strings.Cut(arg, "=")
		if !ok {
			return nil, usageError("env: argument %d is not K=V", i+1)
		}
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("env: argument %d: %w", i+1, err)
		}
		vars[name] = value
	}
	return vars, nil
}
