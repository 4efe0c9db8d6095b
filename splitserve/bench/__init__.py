"""splitserve.bench"""
