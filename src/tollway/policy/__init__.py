"""Policies: which agents and teams may call which tools and models, and risk zones."""
