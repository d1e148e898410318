"""Looking inside trained models: firing rates, energy, Grad-CAM over time, plots."""
