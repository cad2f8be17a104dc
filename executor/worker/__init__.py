"""The worker side: step activities, the code sandbox, fairness gates, llm calls, the worker runner."""
