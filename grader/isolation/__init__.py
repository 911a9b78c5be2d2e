"""Where untrusted code runs: the launcher seam, the sandbox, seccomp, work folders, machine size."""
