"""splitserve.metrics"""
