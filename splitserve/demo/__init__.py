"""splitserve.demo"""
