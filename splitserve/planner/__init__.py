"""splitserve.planner"""
