#!/bin/sh
# metadata_begin
# recipe: hello_world
# tags: debian,ubuntu2204,centos7
# revision: 3
# description_en: Prints a greeting
# metadata_end
echo "Hello, world"
