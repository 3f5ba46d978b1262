package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

func main() {
	ctx := context.Background()
	d, err := harness.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Stop()
	for i := 0; i < 8; i++ {
		id := fmt.Sprintf("r%d", i)
		out, err := d.Ctr(ctx, "run", "-d", "--runtime", "io.sandbox.v1", harness.Image, id, "sleep", "100").CombinedOutput()
		if err != nil {
			fmt.Println(string(out), err)
			return
		}
		time.Sleep(200 * time.Millisecond)
		pids, _ := d.ShimPIDs()
		if err := d.Restart(ctx); err != nil {
			fmt.Println("restart", err)
			return
		}
		for _, p := range pids {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			f := strings.Fields(string(b))
			if len(f) > 51 && (f[2] == "Z" || f[2] == "X") {
				fmt.Printf("iter %d: shim %d state %s exit_code %s\n", i, p, f[2], f[51])
			} else if len(f) == 0 {
				fmt.Printf("iter %d: shim %d gone\n", i, p)
			}
		}
	}
	fmt.Println("done")
}
