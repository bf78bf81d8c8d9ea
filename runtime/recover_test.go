package runtime

func oldOrchMain() int { return 0 }
