package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

func main() {
	ctx := context.Background()
	d, err := harness.Start(ctx)
	if err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	defer d.Stop()
	for _, line := range os.Args[1:] {
		if strings.HasPrefix(line, "!") {
			out, err := exec.Command("bash", "-c", line[1:]).CombinedOutput()
			fmt.Printf("$ %s\n%s(err=%v)\n", line[1:], out, err)
			continue
		}
		args := strings.Fields(line)
		out, err := d.Ctr(ctx, args...).CombinedOutput()
		fmt.Printf("$ ctr %s\n%s(err=%v)\n", line, out, err)
	}
	if os.Getenv("SHOWLOG") != "" {
		b, _ := os.ReadFile(d.Dir + "/containerd.log")
		fmt.Println(string(b))
	}
}
