"""What every step shares: the Step protocol, plans, and the runner."""
