"""Looking inside trained models: firing rates, plots (Grad-CAM and energy come later)."""
