"""One thin rclpy node per module; each module has `main()` (its console script)."""
